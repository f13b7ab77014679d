"""The bpy-free core of Render on AWS.

Everything here runs without Blender: the command line, the tests, the frame-counter Lambda and the
worker import it. The Blender side (``addon/*.py``) only calls into it.
"""
