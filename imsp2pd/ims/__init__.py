"""The IMS core roles: P-/I-/S-CSCF, HSS and OCS, and their shared helpers."""
