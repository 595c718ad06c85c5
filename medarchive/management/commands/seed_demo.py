"""Operator command: fill an installation with demo data, one step per app, safe to run again."""

import textwrap

from django.conf import settings
from django.core.management.base import CommandError

from subscribers.demo import PROVIDER_STAFF_USERNAME, demo_usernames, seed_subscribers
from subscribers.management.commands._operator import OperatorCommand, refusals_as_command_errors


def subscribers_step(stdout, seeded: dict, options: dict) -> dict:
    return seed_subscribers(stdout, reset_passwords=options["reset_passwords"])


def images_step(stdout, seeded: dict, options: dict) -> dict:
    from images.demo import seed_images

    return seed_images(stdout, seeded["subscribers"]["institutions"])


def billing_step(stdout, seeded: dict, options: dict) -> dict:
    from billing.demo import seed_billing

    return seed_billing(stdout, seeded["subscribers"]["institutions"])


def software_step(stdout, seeded: dict, options: dict) -> dict:
    from software.demo import seed_software

    return seed_software(stdout, seeded["subscribers"]["institutions"])


def backup_step(stdout, seeded: dict, options: dict) -> dict:
    from backup.demo import seed_contracts

    subscribers = seeded["subscribers"]
    return {"contracts": seed_contracts(stdout, subscribers["institutions"], subscribers["provider_staff"])}


# Run in order; each step gets what the earlier ones returned (seeded["subscribers"]["institutions"], ...)
# and returns what it made. Apps add their demo steps (images, backup contracts, ...) here.
STEPS = [
    ("subscribers", subscribers_step),
    ("images", images_step),
    ("billing tariffs", billing_step),  # before the contracts: their proposals start from the tariffs
    ("backup", backup_step),
    ("billing invoices", billing_step),  # again, now that the contracts exist: last month's invoices
    ("software", software_step),
]


class Command(OperatorCommand):
    help = f"""Fill this installation with demo data to try medarchive out.

Creates two institutions (demo-general, demo-imaging), a login for every role in each,
a provider-staff login ({PROVIDER_STAFF_USERNAME}) and a demo DICOM AE title per institution at 127.0.0.1,
then demo studies (CT, MR, CR, DX, PET, US; pydicom's sample scanner files and synthesized series,
a 48-slice CT among them), one of them shared by demo-imaging with demo-general, and an accepted
backup contract per institution (proposed from the demo tariffs), and licences for the built-in
processing software.
New users get generated passwords, printed once here in a table and stored nowhere.
Safe to run again: what exists is kept, and existing users keep their passwords
unless --reset-passwords is given.

{textwrap.fill("Demo logins: " + ", ".join(demo_usernames()) + ".", 88, break_on_hyphens=False)}"""
    examples = """
        manage.py seed_demo
        manage.py seed_demo --reset-passwords
    """

    def add_arguments(self, parser):
        parser.add_argument(
            "--reset-passwords",
            action="store_true",
            help="give the demo users that already exist new passwords too (and print them)",
        )
        parser.add_argument(
            "--allow-production",
            action="store_true",
            help="seed even though MEDARCHIVE_PROFILE is production (e.g. a public demo server)",
        )

    def handle(self, *args, **options):
        if settings.PROFILE == "production" and not options["allow_production"]:
            raise CommandError("this is a production installation; seed_demo adds demo logins, so it needs --allow-production")
        seeded: dict[str, dict] = {}
        for name, step in STEPS:
            self.stdout.write(self.style.MIGRATE_HEADING(f"Seeding {name}"))
            with refusals_as_command_errors(f"seeding {name} failed"):
                seeded[name] = step(self.stdout, seeded, options)
        self.stdout.write(self.style.SUCCESS("Demo data ready."))
