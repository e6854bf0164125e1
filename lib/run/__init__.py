"""Live runs: what to send and what is stored (`runner`), sending calls with bounded concurrency and
retries in this process or one worker process per side (`executor`, `worker_preload`, `stoppable`), the
lazy litellm import and cost estimates (`llm`), tool definitions (`tools_spec`) and resuming (`resume`)."""
