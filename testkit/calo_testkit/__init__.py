"""Calo Balance Analytics' development kit: what tests and benchmarks build logs with, never shipped.

- `node_print.py`: values printed as the Node.js Lambda prints them (util.inspect, JSON.stringify);
- `generator.py`: seeded exports in the real layout, with the ground truth a correct reader must find
  (`calo-generate-logs OUT_DIR --transactions N --seed S`).
"""
