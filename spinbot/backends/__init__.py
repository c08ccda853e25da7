from spinbot.backends.quiet import quiet_third_party_imports

quiet_third_party_imports()  # before any backend imports torch's or diffusers' packages
