"""The contract of Render on AWS, written once: every part of the system imports it, none redefines it.

Who imports it: the add-on's bpy-free core (``render_on_aws.core``), the command line, the frame counter Lambda
(``lambda/frame_counter``), the render worker (``container/render_worker``) and the local cloud. It is stdlib only
(no bpy, no boto3; a test imports it with both blocked) so that each of them can ship it as it is: a Lambda layer,
a package in the worker image, a wheel in the Blender extension.

Modules, one concern each:

``errors``           the error vocabulary: name, meaning, worker exit code, retryable or not
``exitcodes``        the worker's exit codes, which the job definitions' retry strategy tells apart
``phases``           what a job is doing, as the CLI and the panel show it
``layout``           S3 URIs and every key of the stack's bucket
``ids``              job ids, execution names and execution ARNs
``paths``            the one rule for a path inside a job's tree (client, Lambda and worker check alike)
``manifest``         ``jobs/<jobId>/manifest.json``: relative path -> sha256, and the main file
``execution_input``  the state machine's input: parse, validate, limits, defaults (the seed's payload too)
``plan``             ``jobs/<jobId>/job.json``: everything a worker needs, and the small summary the state
                     machine carries
"""
