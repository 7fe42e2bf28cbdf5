"""The capacity-gap study on Fashion-MNIST: does AID close the gap between a large teacher and a small student?

Runs on 2 CPU cores. :mod:`.plan` lists the study's stages (teachers, students, adaptations, logit tables) and
runs them through aidkd's stage layer and an executor; :mod:`.verdicts` turns the finished results into one
structured record per claim ({claim, comparison, verdict}); :mod:`.render` writes the Markdown report, its JSON
and the plots. Run it with ``python -m studies.fmnist_gap --profile quick --report PATH`` from the
repository root (docs/results/fmnist_gap.md explains the design).
"""
