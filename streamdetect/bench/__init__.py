"""`streamdetect bench`: the reference design, the stage engine, the stream worker and a bare
Kafka loop, measured in one run (``run``); the processes it starts (``procs``,
``stream_contenders``); and the throwaway loopback broker the bench and tests use."""
