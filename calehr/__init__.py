"""The composition root: the `calehr` command line, the Flask app factory, the Celery entry
point and the wiring of concrete classes to the interfaces in core/interfaces.py."""
