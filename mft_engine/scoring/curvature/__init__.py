"""Curvature of the training loss and what is solved with it: Hessian- and Gauss-Newton-vector products
and diagonals (`hvp`), iterative solvers (`solvers`: CG, LiSSA, power iteration, block-diagonal), the
Woodbury form of the Gauss-Newton matrix through its per-example factors (`lowrank`), and fits, the
solves saved and loaded by name (`fit`)."""
