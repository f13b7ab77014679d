"""Exit codes of the worker, which the job definitions' ``retryStrategy`` tells apart.

template.yaml's ``evaluateOnExit`` and the local cloud's executor read the same numbers; a test checks them.

=====  ==========================================================================  ==============
code   meaning                                                                     Batch does
=====  ==========================================================================  ==============
0      every frame of the chunk is in S3 (or the video is)                          success
65     deterministic failure: the file won't open, a frame won't render, frames    EXIT (no retry)
       are missing or corrupt in S3 (stitch), bad input, S3 refuses the role
       (``AccessDenied``). The cause is in the log and ``jobs/<id>/errors/``.
75     interrupted: SIGTERM (Spot notice, Batch stop) or a transient AWS error;    RETRY
       the frame upload in flight was finished first, so the retry renders only
       what is missing. Also a full disk (``NoSpace``) and a frame that stays
       corrupt after re-rendering (``CorruptFrame``), recorded in ``errors/``:
       Batch may place the retry on another host. (They share 75 because a
       retry strategy holds at most 5 ``evaluateOnExit`` rules.)
137    killed by SIGKILL (stop timeout ran out, or out of memory)                   RETRY
=====  ==========================================================================  ==============

A lost host (Spot reclaim) ends the attempt with status reason ``Host EC2 (instance i-...) terminated.``,
which is retried whatever the exit code.
"""

EXIT_OK = 0
EXIT_FAILED = 65
EXIT_INTERRUPTED = 75
EXIT_KILLED = 137
RETRIED_EXIT_CODES = (EXIT_INTERRUPTED, EXIT_KILLED)
HOST_LOST_REASON_PREFIX = "Host EC2"
