"""After the release: governed delivery of a verified release to trusted research environments.

The project registry (projects.py), each project's package (package.py, with the disclosure
treatments of treatments.py, the risk measures of risk.py and the TRE formats of stata.py and
split_file.py), output checking (outputs.py) and the hash-chained audit log (audit.py). Nothing
here reads the identifiers zone, except SAIL split-file mode, on the data owner's side, by design.
"""
