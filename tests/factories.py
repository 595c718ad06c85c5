"""factory_boy factories for the subscribers app; other apps add their own modules beside this one."""

import factory
from django.utils import timezone

from subscribers.access import Principal, principal_for_user
from subscribers.models import ApplicationEntity, Device, Institution, Membership, Role, User

TEST_PASSWORD = "correct-horse-battery-staple-9"


class InstitutionFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Institution
        django_get_or_create = ("slug",)

    name = factory.Sequence(lambda n: f"Institution {n}")
    slug = factory.Sequence(lambda n: f"inst-{n}")
    contact_email = factory.LazyAttribute(lambda o: f"contact@{o.slug}.example")


class UserFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = User
        django_get_or_create = ("username",)
        skip_postgeneration_save = True

    username = factory.Sequence(lambda n: f"user{n}")
    email = factory.LazyAttribute(lambda o: f"{o.username}@example.org")
    password = factory.PostGenerationMethodCall("set_password", TEST_PASSWORD)

    @factory.post_generation
    def _save(self, create, extracted, **kwargs):
        if create:
            self.save()


class MembershipFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Membership
        skip_postgeneration_save = True

    user = factory.SubFactory(UserFactory)
    institution = factory.SubFactory(InstitutionFactory)

    @factory.post_generation
    def roles(self, create, extracted, **kwargs):
        self.set_roles(extracted if extracted is not None else [])
        if create:
            self.save()


class ApplicationEntityFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = ApplicationEntity

    institution = factory.SubFactory(InstitutionFactory)
    ae_title = factory.Sequence(lambda n: f"MODALITY{n}")
    host = "127.0.0.1"
    port = 11113
    can_send = True
    can_receive = True


class DeviceFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Device

    institution = factory.SubFactory(InstitutionFactory)
    name = factory.Sequence(lambda n: f"device-{n}")
    kind = Device.Kind.FILM_PRINTER


ALL_ROLES = list(Role.values)


def member(institution, username=None, roles=ALL_ROLES) -> Membership:
    kwargs = {"institution": institution, "roles": roles}
    if username:
        kwargs["user"] = UserFactory(username=username)
    return MembershipFactory(**kwargs)


def principal_of(membership: Membership) -> Principal:
    return principal_for_user(membership.user, membership.institution_id)


def aware(*args) -> timezone.datetime:
    return timezone.make_aware(timezone.datetime(*args))
