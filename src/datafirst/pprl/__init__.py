"""De-identified linkage with an outside partner: encode identifiers as keyed Bloom filters
(encode.py), link the encodings without identifiers or secrets (link.py), map the link back
(mapping.py), and the attack that measures what the encodings leak (attack.py). docs/pprl.md."""
