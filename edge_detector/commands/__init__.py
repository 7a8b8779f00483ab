"""One module per `edge-detect` subcommand (imported lazily by :mod:`edge_detector.cli`)."""
