from finfusion.cli import app

app(prog_name="finfusion")
