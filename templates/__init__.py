"""The static site's jinja2 templates and style sheet (data, not code).

A package only so that ``importlib`` can find them: ``beacon.publish.site``
loads them with ``jinja2.PackageLoader("beacon.templates")``.
"""
