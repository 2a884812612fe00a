"""The deterministic simulation of bacnode's decision core (see ``world.py``).

Run it as ``python3 -m tests.sim --nodes N --jobs J --seed S --faults all``.
"""
