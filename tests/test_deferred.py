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


def test_a_window_command_runs_no_ldconfig_and_trio_still_names_its_threads() -> None:
    """trio looks for libpthread at its import; ctypes.util would run `ldconfig -p` (and import
    shutil, with bz2 and lzma) to find it: the library beside the C library is the same one."""
    code = (
        "import sys, subprocess\n"
        "spawned = []\n"
        "def note(event, args):\n"
        "    if event == 'subprocess.Popen':\n"
        "        spawned.append(args[0])\n"
        "sys.addaudithook(note)\n"
        "from kstat.cli import command_module\n"
        "command_module('collect'); command_module('serve')\n"
        "import trio\n"
        "print(spawned, sorted({'shutil', 'bz2', 'lzma', 'tempfile'} & set(sys.modules)))\n"
        "print(trio._core._thread_cache.set_os_thread_name is not None)\n"
        "import ctypes.util\n"
        "print(type(sys.modules['ctypes.util']).__name__, ctypes.util.find_library('pthread'))\n"
    )
    real = subprocess.run(
        [sys.executable, "-c", "import ctypes.util; print(ctypes.util.find_library('pthread'))"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    assert _run(code) == f"[] []\nTrue\nmodule {real}\n"


def test_the_library_finder_names_what_ctypes_util_names_and_asks_it_otherwise() -> None:
    code = (
        "import sys\n"
        "from kstat._deferred import libraries_found_without_ldconfig\n"
        "with libraries_found_without_ldconfig():\n"
        "    import ctypes.util as held\n"
        "    found = [held.find_library(name) for name in ('c', 'pthread', 'kstat-no-such-library')]\n"
        "print('shutil' in sys.modules, found[:2])\n"
        "import ctypes.util\n"
        "print([ctypes.util.find_library(name) for name in ('c', 'pthread')], found[2])\n"
    )
    first, second = _run(code).splitlines()
    # The one unknown name went to the real module (which imports shutil), and found nothing.
    assert first.startswith("True ")
    assert second == f"{first.removeprefix('True ')} None"
