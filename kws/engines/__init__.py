"""Where training runs: `local` (in this process), `determined` (a Determined cluster). Each runs
the one loop in kws.train; none has a training loop of its own."""
