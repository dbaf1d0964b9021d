"""facialattr.app: the apps on top of the parts — the ``facialattr`` command, the quick-start demo
and its sample photos. The core (``facialattr``) and the parts (client, serving, export, training)
never import from here (tests/test_layers.py enforces it).
"""
