#!/usr/bin/env bash
# Rebuilds autobahn.inv: autobahn's docs site publishes its API with
# sphinx-autoapi (autoapi_dirs = src/autobahn, autoapi_root "autoapi"), and
# no package ships its objects.inv. The same autoapi settings, run over the
# installed autobahn, write the same names at the same pages, so links made
# from it land where the site has them.
#
#     bash docs/_inventories/autobahn.sh [PYTHON]
#
# PYTHON is the interpreter whose autobahn to read (default: .venv/bin/python).
# Needs the package registries (it makes a scratch venv with sphinx-autoapi).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
python=${1:-$here/../../.venv/bin/python}
package=$("$python" -c 'import autobahn, os; print(os.path.dirname(autobahn.__file__))')
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
python3 -m venv "$scratch/venv"
"$scratch/venv/bin/pip" install -q sphinx sphinx-autoapi
mkdir -p "$scratch/src" "$scratch/docs"
cp -r "$package" "$scratch/src/autobahn"
# autobahn's own docs/conf.py, its autoapi part.
cat > "$scratch/docs/conf.py" <<'CONF'
project = "autobahn"
extensions = ["autoapi.extension"]
autoapi_type = "python"
autoapi_dirs = ["../src/autobahn"]
autoapi_add_toctree_entry = True
autoapi_keep_files = False
autoapi_options = ["members", "undoc-members", "private-members", "special-members",
                   "show-inheritance", "show-module-summary", "imported-members"]
autoapi_ignore = ["*/_version.py", "*/test_*.py", "*/*_test.py", "*/conftest.py",
                  "**/test/**", "__main__.py", "*/__main__.py"]
autoapi_python_use_implicit_namespaces = True
autoapi_member_order = "alphabetical"
suppress_warnings = ["autoapi.python_import_resolution", "ref.python"]
CONF
printf 'autobahn\n========\n' > "$scratch/docs/index.rst"
"$scratch/venv/bin/sphinx-build" -q -b html "$scratch/docs" "$scratch/out" 2>/dev/null
cp "$scratch/out/objects.inv" "$here/autobahn.inv"
echo "autobahn.inv: autobahn $("$python" -c 'import autobahn; print(autobahn.__version__)')"
