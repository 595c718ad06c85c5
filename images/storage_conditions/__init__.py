"""Storage conditions: what an institution designates for keeping its data, and the periodic run that enforces it.

policy.py decides from the condition rows (retention, compression, holds, copies); services.py changes conditions and
holds and is the one place a study is deleted; compression.py re-encodes files losslessly; enforcement.py is one run;
tasks.py schedules it; selectors.py, forms.py, views.py and urls.py are the portal pages.
"""
