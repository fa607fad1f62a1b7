"""The assembler's jumps to labels, resolved without a kernel (the programs built with them are
loaded and run by the kernel tests of the iterators)."""

from __future__ import annotations

import pytest

from kstat.abi import assembler as asm
from kstat.abi.assembler import Goto, Label
from kstat.abi.structs import Instruction


def _skips(code: list[Instruction]) -> list[int]:
    return [instruction.off for instruction in code]


def test_a_goto_jumps_over_the_instructions_up_to_its_label() -> None:
    code = asm.assemble(
        [
            asm.goto_if("==", asm.R1, 0, "end"),  # over the two slots of the 64-bit load and the mov
            *asm.load_imm64(asm.R2, 1 << 40),
            asm.mov_imm(asm.R0, 1),
            Label("end"),
            asm.exit_(),
        ]
    )
    assert len(code) == 5 and code[0].off == 3
    assert code[0].code == asm.jump_if("==", asm.R1, 0, 3).code


def test_backward_unconditional_and_register_jumps() -> None:
    code = asm.assemble(
        [
            Label("top"),
            asm.mov_imm(asm.R0, 0),
            asm.goto_if_register("!=", asm.R1, asm.R2, "top"),
            Goto("top"),
        ]
    )
    assert _skips(code) == [0, -2, -3]
    assert code[1].regs == asm.jump_if_register("!=", asm.R1, asm.R2, -2).regs == asm.R1 | asm.R2 << 4
    assert code[2].code == asm.jump(-3).code


def test_the_shifts_and_bitwise_operations_have_their_opcodes() -> None:
    # BPF_ALU64 | op | BPF_K, per include/uapi/linux/bpf_common.h
    assert [asm.alu_imm(op, asm.R1, 32).code for op in ("<<", ">>", "|", "&")] == [0x67, 0x77, 0x47, 0x57]


@pytest.mark.parametrize(
    ("items", "complaint"),
    [([Goto("nowhere")], "no label 'nowhere'"), ([Label("twice"), Label("twice")], "defined twice")],
)
def test_a_missing_or_doubled_label_is_refused(items: list[Label | Goto], complaint: str) -> None:
    with pytest.raises(ValueError, match=complaint):
        asm.assemble(items)
