"""eBPF instructions by hand (include/uapi/linux/bpf_common.h, bpf.h): what kstat's own programs
are made of, with no compiler at run time. Each function returns one `Instruction` (two for a
64-bit immediate), named after the assembly it stands for."""

from __future__ import annotations

from kstat.abi.structs import Instruction

# Not imported at run time: kstat's launch builds its iterator with this module, before attrs
# or typing is imported (so `Label` and `Goto` are plain classes).
TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Sequence
    from typing import Final

# Registers: r0 return value, r1-r5 arguments (clobbered by calls), r6-r9 kept, r10 the frame.
R0, R1, R2, R3, R4, R5, R6, R7, R8, R9, FP = range(11)

_LD, _LDX, _ST, _STX, _JMP, _ALU64 = 0x00, 0x01, 0x02, 0x03, 0x05, 0x07
_SIZES: Final = {1: 0x10, 2: 0x08, 4: 0x00, 8: 0x18}  # B, H, W, DW
_MEM, _IMM = 0x60, 0x00
_K, _X = 0x00, 0x08
_ALU_OPS: Final = {
    "+": 0x00,
    "-": 0x10,
    "*": 0x20,
    "|": 0x40,
    "&": 0x50,
    "<<": 0x60,
    ">>": 0x70,
    "^": 0xA0,
    "mov": 0xB0,
}
_JUMP_OPS: Final = {"==": 0x10, ">": 0x20, ">=": 0x30, "!=": 0x50}
_CALL, _EXIT, _JA = 0x80, 0x90, 0x00
PSEUDO_MAP_FD: Final = 1
PSEUDO_BTF_ID: Final = 3
# A call's source register for a kernel function (kfunc) named by its vmlinux BTF id.
PSEUDO_KFUNC_CALL: Final = 2

# Helper function ids (enum bpf_func_id).
MAP_LOOKUP_ELEM: Final = 1
MAP_UPDATE_ELEM: Final = 2
GET_SMP_PROCESSOR_ID: Final = 8
PROBE_READ_KERNEL: Final = 113
SEQ_WRITE: Final = 127
PER_CPU_PTR: Final = 153
MAP_LOOKUP_PERCPU_ELEM: Final = 195


def _insn(code: int, dst: int = 0, src: int = 0, off: int = 0, imm: int = 0) -> Instruction:
    return Instruction(code=code, regs=(dst & 0xF) | ((src & 0xF) << 4), off=off, imm=imm)


def mov(dst: int, src: int) -> Instruction:
    """dst = src"""
    return _insn(_ALU64 | _ALU_OPS["mov"] | _X, dst, src)


def mov_imm(dst: int, value: int) -> Instruction:
    """dst = value (a signed 32-bit immediate)"""
    return _insn(_ALU64 | _ALU_OPS["mov"] | _K, dst, imm=value)


def alu(op: str, dst: int, src: int) -> Instruction:
    """dst op= src, 64-bit"""
    return _insn(_ALU64 | _ALU_OPS[op] | _X, dst, src)


def alu_imm(op: str, dst: int, value: int) -> Instruction:
    """dst op= value, 64-bit"""
    return _insn(_ALU64 | _ALU_OPS[op] | _K, dst, imm=value)


def load(size: int, dst: int, src: int, off: int) -> list[Instruction]:
    """dst = *(u{size*8} *)(src + off)"""
    return [_insn(_LDX | _MEM | _SIZES[size], dst, src, off)]


def store(size: int, dst: int, off: int, src: int) -> Instruction:
    """*(u{size*8} *)(dst + off) = src"""
    return _insn(_STX | _MEM | _SIZES[size], dst, src, off)


def store_imm(size: int, dst: int, off: int, value: int) -> Instruction:
    """*(u{size*8} *)(dst + off) = value"""
    return _insn(_ST | _MEM | _SIZES[size], dst, off=off, imm=value)


def load_imm64(dst: int, value: int) -> list[Instruction]:
    """dst = value, a full 64-bit immediate (two instructions)"""
    value &= (1 << 64) - 1
    low, high = value & 0xFFFFFFFF, value >> 32
    return [
        _insn(_LD | _IMM | _SIZES[8], dst, imm=low - (1 << 32) if low >= 1 << 31 else low),
        _insn(0, imm=high - (1 << 32) if high >= 1 << 31 else high),
    ]


def load_map(dst: int, map_fd: int) -> list[Instruction]:
    """dst = the map whose fd this is (the loader turns the fd into the map)"""
    return [_insn(_LD | _IMM | _SIZES[8], dst, PSEUDO_MAP_FD, imm=map_fd), _insn(0)]


def load_kernel_variable(dst: int, btf_id: int) -> list[Instruction]:
    """dst = &the kernel variable whose vmlinux BTF VAR this is (the loader resolves it)"""
    return [_insn(_LD | _IMM | _SIZES[8], dst, PSEUDO_BTF_ID, imm=btf_id), _insn(0)]


def jump_if(op: str, dst: int, value: int, skip: int) -> Instruction:
    """if dst op value: skip the next `skip` instructions"""
    return _insn(_JMP | _JUMP_OPS[op] | _K, dst, off=skip, imm=value)


def jump(skip: int) -> Instruction:
    return _insn(_JMP | _JA, off=skip)


def call(helper: int) -> Instruction:
    return _insn(_JMP | _CALL, imm=helper)


def call_kernel_function(btf_id: int) -> Instruction:
    """Call the kernel function (kfunc) whose vmlinux BTF FUNC this is."""
    return _insn(_JMP | _CALL, src=PSEUDO_KFUNC_CALL, imm=btf_id)


def exit_() -> Instruction:
    return _insn(_JMP | _EXIT)


def stack_address(dst: int, offset: int) -> list[Instruction]:
    """dst = r10 + offset (offset negative: the program's stack)"""
    return [mov(dst, FP), alu_imm("+", dst, offset)]


def probe_read(
    destination: int, size: int, source_register: int, source_offset: int = 0
) -> list[Instruction]:
    """bpf_probe_read_kernel(r10 + destination, size, source_register + source_offset)"""
    return [
        *stack_address(R1, destination),
        mov_imm(R2, size),
        mov(R3, source_register),
        *([alu_imm("+", R3, source_offset)] if source_offset else []),
        call(PROBE_READ_KERNEL),
    ]


def map_lookup(map_fd: int) -> list[Instruction]:
    """`bpf_map_lookup_elem(map, &(u32){0})`, result ignored: the program uses the map, so the
    kernel lists it among the program's maps."""
    return [
        store_imm(4, FP, -4, 0),  # the key, on the stack
        *load_map(R1, map_fd),
        *stack_address(R2, -4),
        call(MAP_LOOKUP_ELEM),
    ]


def jump_if_register(op: str, dst: int, src: int, skip: int) -> Instruction:
    """if dst op src: skip the next `skip` instructions"""
    return _insn(_JMP | _JUMP_OPS[op] | _X, dst, src, off=skip)


# --- jumps to labels ---------------------------------------------------------------------------
# A program with several exits is easier to read, and to change, with named targets than with
# counted skips: `assemble` turns each `Goto` into a jump over the right number of instructions.


class Label:
    """Where a `Goto` of the same name lands: the instruction that follows the label."""

    __slots__ = ("name",)

    def __init__(self, name: str) -> None:
        self.name = name


class Goto:
    """A jump to a label: always (`op` None), or if `dst op value` (`value` an immediate, or a
    register's number when `register`)."""

    __slots__ = ("dst", "label", "op", "register", "value")

    def __init__(
        self, label: str, op: str | None = None, dst: int = 0, value: int = 0, *, register: bool = False
    ) -> None:
        self.label, self.op, self.dst, self.value, self.register = label, op, dst, value, register


def goto_if(op: str, dst: int, value: int, label: str) -> Goto:
    """if dst op value: goto label"""
    return Goto(label, op, dst, value)


def goto_if_register(op: str, dst: int, src: int, label: str) -> Goto:
    """if dst op src: goto label"""
    return Goto(label, op, dst, src, register=True)


def assemble(items: Sequence[Instruction | Label | Goto]) -> list[Instruction]:
    """The instructions of `items`, each `Goto` resolved to its label (labels take no room)."""
    positions: dict[str, int] = {}
    position = 0
    for item in items:
        if isinstance(item, Label):
            if item.name in positions:
                raise ValueError(f"label {item.name!r} is defined twice")
            positions[item.name] = position
        else:
            position += 1
    code: list[Instruction] = []
    for item in items:
        if isinstance(item, Label):
            continue
        if isinstance(item, Goto):
            try:
                skip = positions[item.label] - (len(code) + 1)
            except KeyError:
                raise ValueError(f"no label {item.label!r}") from None
            if item.op is None:
                code.append(jump(skip))
            elif item.register:
                code.append(jump_if_register(item.op, item.dst, item.value, skip))
            else:
                code.append(jump_if(item.op, item.dst, item.value, skip))
        else:
            code.append(item)
    return code
