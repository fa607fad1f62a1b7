"""The BTF wire format (include/uapi/linux/btf.h): reading type names out of a BTF blob, and
building the one-function blob kstat's own loader gives its programs.

A program keeps only 15 characters of its name in bpf_prog_info; its BTF keeps the whole
function name, which is what bpftool shows and what kstat reports.
"""

from __future__ import annotations

import struct

from kstat.errors import FeatureMissing, KstatError

# Not imported at run time: kstat's launch reads its baseline through this module.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Final

BTF_MAGIC: Final = 0xEB9F
BTF_VERSION: Final = 1
_HEADER = struct.Struct("<HBBIIIII")  # magic, version, flags, hdr_len, type_off/len, str_off/len
_TYPE = struct.Struct("<III")  # name_off, info, size_or_type

BTF_KIND_INT: Final = 1
BTF_KIND_FUNC: Final = 12
BTF_KIND_FUNC_PROTO: Final = 13

# Bytes that follow the common 12-byte header of each kind: (fixed, per vlen item).
_TRAILING_BYTES: Final = {
    1: (4, 0),  # INT: encoding word
    2: (0, 0),  # PTR
    3: (12, 0),  # ARRAY: struct btf_array
    4: (0, 12),  # STRUCT: btf_member per field
    5: (0, 12),  # UNION
    6: (0, 8),  # ENUM: btf_enum per value
    7: (0, 0),  # FWD
    8: (0, 0),  # TYPEDEF
    9: (0, 0),  # VOLATILE
    10: (0, 0),  # CONST
    11: (0, 0),  # RESTRICT
    12: (0, 0),  # FUNC
    13: (0, 8),  # FUNC_PROTO: btf_param per argument
    14: (4, 0),  # VAR: btf_var
    15: (0, 12),  # DATASEC: btf_var_secinfo per variable
    16: (0, 0),  # FLOAT
    17: (4, 0),  # DECL_TAG: btf_decl_tag
    18: (0, 0),  # TYPE_TAG
    19: (0, 12),  # ENUM64: btf_enum64 per value
}


class BtfFormatError(KstatError, ValueError):
    """The blob is not BTF kstat can read (bad magic, a kind newer than kstat, truncation):
    a kstat error, so that whatever needs the BTF falls back as for a missing feature."""


def _sections(blob: bytes) -> tuple[int, int, bytes]:
    """Where a BTF blob's types start and end, and its string section; BtfFormatError for a
    blob that is not BTF or whose sections run past its end."""
    if len(blob) < _HEADER.size:
        raise BtfFormatError("BTF blob shorter than its header")
    magic, version, _, header_length, type_offset, type_length, string_offset, string_length = (
        _HEADER.unpack_from(blob)
    )
    if magic != BTF_MAGIC or version != BTF_VERSION:
        raise BtfFormatError(f"not BTF: magic {magic:#x}, version {version}")
    types_start = header_length + type_offset
    types_end = types_start + type_length
    strings_start = header_length + string_offset
    if types_end > len(blob) or strings_start + string_length > len(blob):
        raise BtfFormatError("BTF sections run past the end of the blob")
    return types_start, types_end, blob[strings_start : strings_start + string_length]


def type_names(blob: bytes) -> list[str]:
    """The name of every type in a BTF blob, indexed by type id (id 0, void, is "")."""
    types_start, types_end, strings = _sections(blob)

    names = [""]
    position = types_start
    while position < types_end:
        name_offset, info, _ = _TYPE.unpack_from(blob, position)
        kind = (info >> 24) & 0x1F
        vlen = info & 0xFFFF
        try:
            fixed, per_item = _TRAILING_BYTES[kind]
        except KeyError:
            raise BtfFormatError(f"BTF kind {kind} is newer than kstat") from None
        names.append(_string_at(strings, name_offset))
        position += _TYPE.size + fixed + per_item * vlen
    return names


def _string_at(strings: bytes, offset: int) -> str:
    end = strings.find(b"\0", offset)
    # kstat.text.from_host's rule (a byte that is not UTF-8 becomes U+FFFD), spelt out: the ABI
    # imports nothing above it.
    return strings[offset : end if end >= 0 else len(strings)].decode("utf-8", "replace")


def single_function_btf(function_name: str) -> tuple[bytes, int]:
    """BTF describing one static function `int NAME(void)`; returns the blob and its FUNC id.

    Enough for BPF_PROG_LOAD's func_info, which is what carries a program's full name.
    """
    strings = b"\0int\0" + function_name.encode() + b"\0"
    int_name, function_name_offset = 1, 5
    types = b"".join(
        [
            # [1] INT "int": 4 bytes, signed (encoding 1 << 24), 32 bits.
            _TYPE.pack(int_name, BTF_KIND_INT << 24, 4),
            struct.pack("<I", (1 << 24) | 32),
            # [2] FUNC_PROTO returning [1], no arguments.
            _TYPE.pack(0, BTF_KIND_FUNC_PROTO << 24, 1),
            # [3] FUNC NAME of type [2], static linkage (vlen 0).
            _TYPE.pack(function_name_offset, BTF_KIND_FUNC << 24, 2),
        ]
    )
    header = _HEADER.pack(BTF_MAGIC, BTF_VERSION, 0, _HEADER.size, 0, len(types), len(types), len(strings))
    return header + types + strings, 3


BTF_KIND_STRUCT: Final = 4
BTF_KIND_UNION: Final = 5
BTF_KIND_VAR: Final = 14
BTF_KIND_DATASEC: Final = 15
_VAR_SECINFO = struct.Struct("<III")  # type, offset, size
# Kinds that only qualify another type (followed to reach a member's struct or union).
_QUALIFIERS: Final = frozenset({8, 9, 10, 11, 18})  # TYPEDEF, VOLATILE, CONST, RESTRICT, TYPE_TAG
_MEMBER = struct.Struct("<III")  # name_off, type, offset (bits; bitfields pack size << 24)
_INFO = struct.Struct("<I")


class KernelLayout:
    """Where fields sit in the running kernel's structs, and its functions' type ids, from a
    vmlinux BTF blob: what a program kstat assembles needs, resolved at load time rather than
    compiled in, so that one kstat fits every kernel.

    Only where each type starts is kept (four bytes a type); the rest is read from the blob when
    asked, so the ~150,000 types of a kernel cost no Python object each.
    """

    def __init__(self, blob: bytes) -> None:
        # Here, not at the top: array imports collections, and the launch reads its baseline
        # through this module (for single_function_btf), where no layout is parsed.
        from array import array  # noqa: PLC0415

        position, end, self._strings = _sections(blob)
        self._blob = blob
        # Where each type's 12-byte header starts, by type id (id 0, void, has none).
        self._starts = array("I", [0])
        while position < end:
            if position + _TYPE.size > end:
                raise BtfFormatError("BTF types run past the end of their section")
            info = _INFO.unpack_from(blob, position + 4)[0]
            kind, vlen = (info >> 24) & 0x1F, info & 0xFFFF
            try:
                fixed, per_item = _TRAILING_BYTES[kind]
            except KeyError:
                raise BtfFormatError(f"BTF kind {kind} is newer than kstat") from None
            self._starts.append(position)
            position += _TYPE.size + fixed + per_item * vlen
        if position != end:
            raise BtfFormatError("BTF types run past the end of their section")

    def _header(self, type_id: int) -> tuple[int, int, int, int, bool]:
        """(kind, name offset, size or type, vlen, kind_flag) of a type."""
        if not 0 < type_id < len(self._starts):
            raise BtfFormatError(f"BTF refers to type {type_id}, past its last one")
        name_offset, info, size_or_type = _TYPE.unpack_from(self._blob, self._starts[type_id])
        return (info >> 24) & 0x1F, name_offset, size_or_type, info & 0xFFFF, bool(info >> 31)

    def _find(self, name: str, kinds: frozenset[int]) -> int | None:
        wanted = name.encode() + b"\0"
        strings, blob, unpack = self._strings, self._blob, _TYPE.unpack_from
        for type_id in range(1, len(self._starts)):
            name_offset, info, _ = unpack(blob, self._starts[type_id])
            if (info >> 24) & 0x1F in kinds and strings.startswith(wanted, name_offset):
                return type_id
        return None

    def function_id(self, name: str, since: str | None = None) -> int:
        """The type id of the FUNC `name` (what a tracing program attaches to); FeatureMissing
        when this kernel has none (`since`: the version that brought it)."""
        found = self._find(name, frozenset({BTF_KIND_FUNC}))
        if found is None:
            raise FeatureMissing(name, since, "not in this kernel's BTF")
        return found

    def has_function(self, name: str) -> bool:
        return self._find(name, frozenset({BTF_KIND_FUNC})) is not None

    def variable_id(self, name: str) -> int | None:
        """The type id of the kernel variable (VAR) `name`, or None."""
        return self._find(name, frozenset({BTF_KIND_VAR}))

    def has_struct(self, name: str) -> bool:
        return self._find(name, frozenset({BTF_KIND_STRUCT})) is not None

    def struct_id(self, name: str, since: str | None = None) -> int:
        """The type id of `struct name`; FeatureMissing when this kernel has none."""
        return self._struct(name, since)

    def _struct(self, name: str, since: str | None) -> int:
        found = self._find(name, frozenset({BTF_KIND_STRUCT}))
        if found is None:
            raise FeatureMissing(f"struct {name}", since, "not in this kernel's BTF")
        return found

    def offset(self, struct_name: str, member: str, since: str | None = None) -> int:
        """The byte offset of `member` in `struct struct_name`, looking into anonymous unions and
        structs as C does; FeatureMissing when this kernel has no such field (`since`: the
        version that brought it)."""
        found = self.offset_if_any(struct_name, member, since)
        if found is None:
            raise FeatureMissing(f"struct {struct_name}.{member}", since, "not in this kernel's BTF")
        return found

    def offset_if_any(self, struct_name: str, member: str, since: str | None = None) -> int | None:
        """`offset`, or None when the struct (which must exist) has no such member."""
        return self._member_offset(self._struct(struct_name, since), member.encode())

    def size(self, struct_name: str) -> int:
        """sizeof(struct struct_name) on this kernel."""
        return self._header(self._struct(struct_name, None))[2]

    def per_cpu_variable(self) -> int:
        """The type id of a per-CPU variable of the kernel's (a VAR of the `.data..percpu`
        section): what `bpf_per_cpu_ptr` can be given. FeatureMissing when the BTF lists none
        (built without them: pahole before 1.18)."""
        section = self._find(".data..percpu", frozenset({BTF_KIND_DATASEC}))
        if section is not None:
            _, _, _, vlen, _ = self._header(section)
            first = self._starts[section] + _TYPE.size
            for index in range(vlen):
                variable, _, _ = _VAR_SECINFO.unpack_from(self._blob, first + index * _VAR_SECINFO.size)
                if 0 < variable < len(self._starts) and self._header(variable)[0] == BTF_KIND_VAR:
                    return int(variable)
        raise FeatureMissing("per-CPU variables in the kernel's BTF", "5.10")

    def _resolved(self, type_id: int) -> int:
        while True:
            kind, _, size_or_type, _, _ = self._header(type_id)
            if kind not in _QUALIFIERS:
                return type_id
            type_id = size_or_type

    def _member_offset(self, type_id: int, member: bytes) -> int | None:
        kind, _, _, vlen, bitfields = self._header(type_id)
        if kind not in (BTF_KIND_STRUCT, BTF_KIND_UNION):
            return None
        members = self._starts[type_id] + _TYPE.size
        for index in range(vlen):
            name_offset, member_type, offset = _MEMBER.unpack_from(self._blob, members + index * _MEMBER.size)
            bits = int(offset & 0xFFFFFF if bitfields else offset)
            if name_offset and self._strings.startswith(member + b"\0", name_offset):
                return bits // 8
            if not name_offset:
                inner = self._member_offset(self._resolved(member_type), member)
                if inner is not None:
                    return bits // 8 + inner
        return None
