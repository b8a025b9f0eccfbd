"""DICOM: the storage SCP and its guard against hostile peers, the C-STORE sender and the
Orthanc REST sender, reading OPT volumes, and the objects the appliance writes: derived OPT,
en-face images, the layer and cone SEG, the measurement SR, with their provenance and validity
checks; log redaction of received values.

Rule: this package knows DICOM (pydicom, pynetdicom, highdicom) and nothing else: no database,
no queue, no GPU. Whatever must happen to a received file is passed in as a callback.
"""
