"""
The HTTP client with ``requests``: GET a URL, print the status and the body.

As in the lesson, ``requests.get`` does the work; unlike the lesson's call,
this one has a timeout, so a server that never answers cannot hang it, and a
failure is one line on stderr (exit status 1) instead of a traceback. Any
HTTP response, 404 or 500 included, is a success: it is printed.

An ``https://`` URL is checked against the system's CAs, or with
``--cacert FILE`` only against the CAs in FILE (``requests``' ``verify=``):
the certificate and the URL's host name both.
"""

import sys

from netlab.compat._common import Parser, add_client_tls, client_tls

try:
    import requests
except ImportError:  # the "compat" extra is not installed
    requests = None


def fetch(url, timeout=10.0, cacert=None):
    """GET ``url``; return the status code and the body as bytes.
    ``cacert``: a PEM file of the CAs to trust instead of the system's."""
    response = requests.get(url, timeout=timeout, verify=cacert or True)
    return response.status_code, response.content


def main(argv=None):
    parser = Parser(description=__doc__)
    parser.add_argument("url", help="what to GET, e.g. http://127.0.0.1:8080/")
    parser.add_argument(
        "--timeout", type=float, default=10.0, help="default: %(default)s"
    )
    add_client_tls(parser)
    args = parser.parse_args(argv)
    if args.cacert and not args.url.lower().startswith("https:"):
        parser.error("--cacert needs an https:// URL")
    client_tls(parser, args)  # an unreadable or bad --cacert: one line now
    if requests is None:
        sys.exit("http_client: needs requests: pip install 'netlab[compat]'")
    try:
        response = requests.get(
            args.url, timeout=args.timeout, verify=args.cacert or True
        )
    except (requests.RequestException, ValueError) as error:
        # ValueError: a few malformed URLs get past requests' own checks.
        sys.exit(f"http_client: {args.url}: {error}")
    print(response.status_code)
    text = response.text
    print(text, end="" if text.endswith("\n") else "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
