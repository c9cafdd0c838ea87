"""Backend actions (one module per backend) behind one protocol, and the catalogue of their names."""
