"""`mc board`: a read-only web board over the store (pages, a JSON API and live updates), in the
``web`` extra (``pip install 'mc-hooks[web]'``). It reads through ``store/views.py`` only."""
