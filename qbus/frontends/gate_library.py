"""OpenQASM gate definitions the parser reads once, at import: pure data, no logic.

Two sets, both plain OpenQASM text so that they read like the files they come from and go
through the same parser as user programs:

* :data:`QELIB1_EXTRAS`: the gates of Qiskit's ``qelib1.inc`` that the IR has no native gate
  for (``rccx``, ``rc3x``, ``c3x``, ``c3sqrtx``, ``c4x``), with the bodies that file gives
  them. A program may call them without defining them, as Qiskit's OpenQASM 2 reader allows;
  its own definition under one of these names wins.
* :data:`EXACT_DECOMPOSITIONS`: for each IR gate that has no single controlled or inverse IR
  gate, a body in other IR gates that equals it exactly, global phase included. The gate
  modifiers (:mod:`qbus.frontends.gate_modifiers`) control or invert such a gate op by op,
  which is only right when the body has the gate's exact matrix (a global phase turns into
  a relative one under a control). ``tests/test_qasm_gates.py`` checks ``ctrl @`` and
  ``inv @`` of every IR gate against Qiskit's controlled and inverse gates by unitary, which
  a body off by a global phase fails.
"""

from __future__ import annotations

__all__ = ["EXACT_DECOMPOSITIONS", "QELIB1_EXTRAS"]

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

# Exact (global phase included) bodies, in gates that each have a direct controlled form
# or reduce to such gates. The names are the IR gates they define; ccx is controlled
# through qelib1's c3x instead, which is shorter than controlling its body.
EXACT_DECOMPOSITIONS = """
gate sxdg a { h a; sdg a; h a; }
gate cy a, b { sdg b; cx a, b; s b; }
gate cz a, b { h b; cx a, b; h b; }
gate ch a, b { s b; h b; t b; cx a, b; tdg b; h b; sdg b; }
gate csx a, b { h b; cu1(pi/2) a, b; h b; }
gate cp(l) a, b { p(l/2) a; cx a, b; p(-l/2) b; cx a, b; p(l/2) b; }
gate crz(l) a, b { rz(l/2) b; cx a, b; rz(-l/2) b; cx a, b; }
gate cry(l) a, b { ry(l/2) b; cx a, b; ry(-l/2) b; cx a, b; }
gate crx(l) a, b { h b; rz(l/2) b; cx a, b; rz(-l/2) b; cx a, b; h b; }
gate cu(t, f, l, g) a, b {
  p(g) a; p((l + f)/2) a; p((l - f)/2) b; cx a, b; u(-t/2, 0, -(f + l)/2) b; cx a, b;
  u(t/2, f, 0) b;
}
gate rzz(l) a, b { cx a, b; rz(l) b; cx a, b; }
gate rxx(l) a, b { h a; h b; cx a, b; rz(l) b; cx a, b; h a; h b; }
gate ryy(l) a, b { sxdg a; sxdg b; cx a, b; rz(l) b; cx a, b; sx a; sx b; }
gate cswap a, b, c { cx c, b; ccx a, b, c; cx c, b; }
"""
