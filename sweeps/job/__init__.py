"""The job one sweep point runs: its validated configuration (`config`, `schemas`), the data it
trains on (`data`) and the intermediate values it reports to the study (`intermediate`)."""
