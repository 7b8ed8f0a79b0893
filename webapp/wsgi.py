"""WSGI entry point (gunicorn webapp.wsgi)."""

import os

from django.core.wsgi import get_wsgi_application

# One BLAS thread per web process, set before numpy loads: each request's numpy work
# (diversification, vector maths) is small, and gunicorn already runs a process per core
# with several threads each; OpenBLAS's own threads then only fight them for the cores
# (measured on 2 loaded cores: diversifying a 144-candidate page took 12.4 ms with
# OpenBLAS's default threads, 1.9 ms with one).
for _variable in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_variable, "1")

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "webapp.settings")

application = get_wsgi_application()
