"""The console's blueprint, in its own module so the route modules and the package's
`register_console` do not import each other."""

from flask import Blueprint

console_bp = Blueprint("console", __name__, url_prefix="/console",
                       template_folder="templates", static_folder="static")
