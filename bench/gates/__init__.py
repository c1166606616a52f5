"""CI gates: the fixed-seed quality gate (and its baseline JSON) and the speed comparison."""
