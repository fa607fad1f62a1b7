"""kstat's built-in sinks, one module each, registered in the `kstat.sinks` entry-point group.

The repository keeps them in its top-level `sinks/` folder; they are installed, and imported,
as `kstat.sinks`. Importing them as `sinks` (kstat 0.2's name, which collided with any other
project's top-level `sinks`) still works from a checkout for one release, with a warning.
"""

import warnings

if __name__ == "sinks":
    warnings.warn(
        "the `sinks` package is now `kstat.sinks`; importing it as `sinks` stops working in kstat 0.4",
        DeprecationWarning,
        stacklevel=2,
    )
