"""Where training runs: `local` (in this process), `determined` (a Determined cluster), `ray` (a
Ray cluster, with `ray_context` as its Core-API-shaped adapter). Each runs the one loop in
kws.train; none has a training loop of its own."""
