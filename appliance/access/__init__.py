"""Access: local accounts and their roles, web sessions, and which role may do what.

``permissions`` is the one table of role → actions that every route and page checks;
``commands`` is ``aomas user``.
"""
