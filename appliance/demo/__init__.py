"""For the demo and the tests, never the clinical path: a synthetic phantom study written as
DICOM (``study``), a local Orthanc to play the PACS (``pacs``), and the walk-through that sends
a study through a running appliance and prints its result (``walkthrough``).
"""
