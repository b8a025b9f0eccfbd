"""The web part: the Flask app (review page, JSON API, health) and the commands that serve it.

Rule: ``ui`` calls ``appliance`` only, never ``gpu`` or pynetdicom directly. It sits at the top
of the import chain, which is why the ``web`` and ``serve`` commands are added here.
"""
