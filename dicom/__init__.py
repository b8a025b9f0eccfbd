"""DICOM: the storage SCP, the C-STORE sender, reading volumes and writing OPT instances.

Rule: this package knows DICOM (pydicom, pynetdicom, highdicom) and nothing else: no database,
no queue, no GPU. Whatever must happen to a received file is passed in as a callback.
"""
