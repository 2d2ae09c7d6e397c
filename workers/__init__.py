"""Background workers that run outside the graphs: `recordings` streams recordings and submission files to disk
(resumable, bounded) and transcribes audio; `coviu-agent recordings` runs it (`agent.runs.run_recordings`)."""
