"""OpenQASM gate definitions the parser reads once, at import: pure data, no logic.

Plain OpenQASM text, so that it reads like the file it comes from and goes through the
same parser as user programs. :data:`QELIB1_EXTRAS`: the gates of Qiskit's ``qelib1.inc``
that the IR has no native gate for (``rccx``, ``rc3x``, ``c3x``, ``c3sqrtx``, ``c4x``),
with the bodies that file gives them. A program may call them without defining them, as
Qiskit's OpenQASM 2 reader allows; its own definition under one of these names wins.
"""

from __future__ import annotations

__all__ = ["QELIB1_EXTRAS"]

# From Qiskit's qelib1.inc (qiskit/qasm/libs/qelib1.inc), bodies unchanged.
QELIB1_EXTRAS = """
gate rccx a, b, c {
  u2(0, pi) c; u1(pi/4) c; cx b, c; u1(-pi/4) c; cx a, c; u1(pi/4) c; cx b, c;
  u1(-pi/4) c; u2(0, pi) c;
}
gate rc3x a, b, c, d {
  u2(0, pi) d; u1(pi/4) d; cx c, d; u1(-pi/4) d; u2(0, pi) d; cx a, d; u1(pi/4) d;
  cx b, d; u1(-pi/4) d; cx a, d; u1(pi/4) d; cx b, d; u1(-pi/4) d; u2(0, pi) d;
  u1(pi/4) d; cx c, d; u1(-pi/4) d; u2(0, pi) d;
}
gate c3x a, b, c, d {
  h d; p(pi/8) a; p(pi/8) b; p(pi/8) c; p(pi/8) d;
  cx a, b; p(-pi/8) b; cx a, b; cx b, c; p(-pi/8) c; cx a, c; p(pi/8) c; cx b, c;
  p(-pi/8) c; cx a, c; cx c, d; p(-pi/8) d; cx b, d; p(pi/8) d; cx c, d; p(-pi/8) d;
  cx a, d; p(pi/8) d; cx c, d; p(-pi/8) d; cx b, d; p(pi/8) d; cx c, d; p(-pi/8) d;
  cx a, d; h d;
}
gate c3sqrtx a, b, c, d {
  h d; cu1(pi/8) a, d; h d; cx a, b; h d; cu1(-pi/8) b, d; h d; cx a, b;
  h d; cu1(pi/8) b, d; h d; cx b, c; h d; cu1(-pi/8) c, d; h d; cx a, c;
  h d; cu1(pi/8) c, d; h d; cx b, c; h d; cu1(-pi/8) c, d; h d; cx a, c;
  h d; cu1(pi/8) c, d; h d;
}
gate c4x a, b, c, d, e {
  h e; cu1(pi/2) d, e; h e; c3x a, b, c, d; h e; cu1(-pi/2) d, e; h e; c3x a, b, c, d;
  c3sqrtx a, b, c, e;
}
"""
