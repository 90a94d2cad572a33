"""
The tools that measure and exercise netlab's services from outside:
``netlab bench`` (:mod:`netlab.tools.bench`) and the soak test
(:mod:`netlab.tools.soak`). Neither is imported by the framework or the
services.
"""
