"""What a circular email says around the text itself, in each version's language.

A small table rather than gettext catalogues: these are a dozen fixed phrases
that go into mail in every language a circular may be written in (the UN six
and more), while the web pages' catalogues cover only the languages the pages
are translated into. A language missing here gets English.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date

from babel.core import UnknownLocaleError
from babel.dates import format_date

from ..languages import base_language


@dataclass(frozen=True)
class Wording:
    circular_no: str  # "{number}" is replaced
    view_in_browser: str
    view_in_browser_text: str
    attached: str
    regards: str
    dear: str  # "{name}" is replaced
    dear_colleague: str
    you_receive: str  # "{email}" and "{list}" are replaced
    manage_preferences: str
    unsubscribe: str
    phone: str
    email: str
    web: str
    about_us: str

    def label(self, number: int | None) -> str:
        """The label (Circular No. 27) in this language; empty without a number."""
        return "" if number is None else self.circular_no.format(number=number)

    def subject(self, number: int | None, title: str) -> str:
        return title if number is None else f"{self.label(number)}: {title}"

    def greeting(self, name: str) -> str:
        return self.dear.format(name=name) if name else self.dear_colleague


WORDINGS: dict[str, Wording] = {
    "en": Wording(
        circular_no="Circular No. {number}",
        view_in_browser="View this circular in your browser",
        view_in_browser_text="View in your browser",
        attached="Attached to this circular",
        regards="With best regards,",
        dear="Dear {name},",
        dear_colleague="Dear colleague,",
        you_receive="You receive this as {email}, subscribed to {list}.",
        manage_preferences="Manage preferences",
        unsubscribe="Unsubscribe",
        phone="Phone",
        email="Email",
        web="Web",
        about_us="About us",
    ),
    "fr": Wording(
        circular_no="Circulaire n° {number}",
        view_in_browser="Voir cette circulaire dans votre navigateur",
        view_in_browser_text="Voir dans votre navigateur",
        attached="Pièces jointes à cette circulaire",
        regards="Avec nos meilleures salutations,",
        dear="Chère, cher {name},",
        dear_colleague="Chère collègue, cher collègue,",
        you_receive="Vous recevez ce message à l’adresse {email}, inscrite à la liste {list}.",
        manage_preferences="Gérer mes préférences",
        unsubscribe="Se désabonner",
        phone="Téléphone",
        email="Courriel",
        web="Site",
        about_us="Qui sommes-nous",
    ),
    "es": Wording(
        circular_no="Circular n.º {number}",
        view_in_browser="Ver esta circular en su navegador",
        view_in_browser_text="Ver en su navegador",
        attached="Documentos adjuntos a esta circular",
        regards="Atentamente,",
        dear="Estimada/o {name}:",
        dear_colleague="Estimada/o colega:",
        you_receive="Recibe este mensaje en {email}, suscrita a la lista {list}.",
        manage_preferences="Gestionar preferencias",
        unsubscribe="Darse de baja",
        phone="Teléfono",
        email="Correo",
        web="Web",
        about_us="Quiénes somos",
    ),
    "ar": Wording(
        circular_no="التعميم رقم {number}",
        view_in_browser="اعرض هذا التعميم في المتصفح",
        view_in_browser_text="اعرضه في المتصفح",
        attached="مرفقات هذا التعميم",
        regards="مع أطيب التحيات،",
        dear="عزيزتي/عزيزي {name}،",
        dear_colleague="الزميلات والزملاء الأعزاء،",
        you_receive="تصلك هذه الرسالة على {email} لاشتراكك في {list}.",
        manage_preferences="إدارة التفضيلات",
        unsubscribe="إلغاء الاشتراك",
        phone="الهاتف",
        email="البريد الإلكتروني",
        web="الموقع",
        about_us="من نحن",
    ),
    "zh": Wording(
        circular_no="第{number}号通函",
        view_in_browser="在浏览器中查看本通函",
        view_in_browser_text="在浏览器中查看",
        attached="本通函附件",
        regards="此致敬礼，",
        dear="尊敬的{name}：",
        dear_colleague="尊敬的同事：",
        you_receive="您以 {email} 订阅了 {list}，因此收到此邮件。",
        manage_preferences="管理订阅偏好",
        unsubscribe="退订",
        phone="电话",
        email="电子邮件",
        web="网站",
        about_us="关于我们",
    ),
    "ru": Wording(
        circular_no="Циркуляр № {number}",
        view_in_browser="Открыть этот циркуляр в браузере",
        view_in_browser_text="Открыть в браузере",
        attached="Приложения к циркуляру",
        regards="С уважением,",
        dear="Уважаемый(ая) {name}!",
        dear_colleague="Уважаемые коллеги!",
        you_receive="Вы получаете это письмо на адрес {email} как подписчик списка {list}.",
        manage_preferences="Настройки подписки",
        unsubscribe="Отписаться",
        phone="Телефон",
        email="Эл. почта",
        web="Сайт",
        about_us="О нас",
    ),
}


def wording(language: str | None) -> Wording:
    """The phrases for a version's language; English when the table has none."""
    return WORDINGS.get(base_language(language), WORDINGS["en"])


def long_date(day: date, language: str | None) -> str:
    """7 December 2026 in English, as before; the language's own long form otherwise."""
    code = base_language(language) or "en"
    if code == "en":
        return f"{day.day} {day.strftime('%B %Y')}"
    try:
        return str(format_date(day, format="long", locale=code))
    except (UnknownLocaleError, ValueError):
        return f"{day.day} {day.strftime('%B %Y')}"
