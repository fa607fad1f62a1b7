"""Modules deferred while a dependency imports (kstat._deferred): the real one at first use."""

from __future__ import annotations

import subprocess
import sys


def _run(code: str) -> str:
    completed = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return completed.stdout


def test_a_deferred_module_is_imported_at_its_first_use_and_only_then() -> None:
    code = (
        "import sys\n"
        "from kstat._deferred import deferred\n"
        "with deferred('csv'):\n"
        "    import csv as held\n"
        "print('csv' in sys.modules, held.__name__)\n"
        "print(held.QUOTE_ALL == __import__('csv').QUOTE_ALL, 'csv' in sys.modules)\n"
    )
    assert _run(code) == "False csv\nTrue True\n"


def test_a_deferred_module_used_while_it_still_stands_in_is_the_real_one() -> None:
    # An importer that reads an attribute at its top, inside the block: no recursion.
    code = (
        "import sys\n"
        "from kstat._deferred import deferred\n"
        "with deferred('csv'):\n"
        "    import csv as held\n"
        "    quote = held.QUOTE_ALL\n"
        "print(quote == sys.modules['csv'].QUOTE_ALL, type(sys.modules['csv']).__name__)\n"
    )
    assert _run(code) == "True module\n"


def test_a_window_command_never_loads_openssl() -> None:
    """trio's ssl and hmac, and hashlib, load OpenSSL's libraries: 8 MB of every window."""
    code = (
        "import sys\n"
        "from kstat.cli import command_module\n"
        "command_module('collect'); command_module('serve')\n"
        "import trio\n"
        "print(sorted({'ssl', '_ssl', 'hmac', '_hashlib', 'idna'} & set(sys.modules)))\n"
    )
    assert _run(code) == "[]\n"
