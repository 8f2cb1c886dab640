"""Sign-on statements: circulars opened for endorsement by organisations.

No web or worker imports here: the public form, the admin and the mail task
call these services.
"""
