"""Running artifacts on a device: ``local``, ``ssh://[user@]host[:port]`` or ``emulated:arm64[:CPU]``.

The host pushes the artifact folder, a zipapp of the toolkit's device-side code (``runner.py``
and the modules it imports: numpy and the artifact's runtime are all the device needs) and the
inputs through a :class:`~.transport.Transport`, runs the same timing loop as ``bench`` there,
and pulls back JSON and outputs (``bench.py``, ``remote.py``); ``parity.py`` compares them with
the host's. ``emulated.py`` builds the emulated arm64 device. This ``__init__`` is empty: the
zipapp ships it.
"""
