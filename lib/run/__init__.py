"""Live runs: what to send and what is stored (`runner`), sending calls with bounded concurrency and
retries in this process or one worker process per side (`executor`, `worker_preload`, `stoppable`), when to
use workers and their fork server (`forkserver`), the end-of-run checks' imports during the calls
(`preload`), the lazy litellm import, prices and token counts without it (`llm`), tool definitions
(`tools_spec`) and resuming (`resume`)."""
