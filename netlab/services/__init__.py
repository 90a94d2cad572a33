"""
netlab's own demo services, each written on the public framework layer
(:mod:`netlab.tcp`, :mod:`netlab.http`, :mod:`netlab.websocket`) exactly as
you would write yours:

- :mod:`netlab.services.echo`: the TCP echo, and its client;
- :mod:`netlab.services.greeting`: the TCP greeting, and its client;
- :mod:`netlab.services.hello`: the HTTP service (``GET /`` says
  ``Hello, world!``, ``/echo``, ``/healthz``, and the two below mounted);
- :mod:`netlab.services.wsecho`: the WebSocket echo (``Echo: <message>``);
- :mod:`netlab.services.console`: the page that tries the WebSocket echo.

Nothing in the framework imports them; the twistd plugins
(:mod:`netlab.tap`) and the command line (:mod:`netlab.cli`) do.
"""
