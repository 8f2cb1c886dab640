"""The digest's own words in the languages its readers take circulars in.

Kept here rather than in the web's gettext catalogues: the digest is rendered
by the worker, outside any request, and its handful of phrases should not
depend on the public pages' catalogue. A language missing here reads English;
the circulars inside still come in the reader's language where they have it.
Placeholders are str.format names.
"""

from __future__ import annotations

from collections.abc import Mapping

from babel.core import Locale, UnknownLocaleError

from ..languages import DEFAULT_LANGUAGE, base_language

_EN: dict[str, str] = {
    "subject.weekly": "{list}: weekly digest, {date} ({count})",
    "subject.monthly": "{list}: monthly digest, {date} ({count})",
    "count.one": "{n} circular",
    "count.many": "{n} circulars",
    "heading.weekly": "Weekly digest: {count}",
    "heading.monthly": "Monthly digest: {count}",
    "intro": "Here are the circulars sent to {list} since your last digest.",
    "number": "Circular No. {number}",
    "read": "Read the full circular",
    "attachments": "Attachments",
    "not_public": "This circular is not in the public archive; the link is for you and expires.",
    "why": (
        "You receive this digest instead of each circular. You can change that in your preferences."
    ),
}

_WORDS: dict[str, dict[str, str]] = {
    "en": _EN,
    "fr": {
        "subject.weekly": "{list} : résumé hebdomadaire du {date} ({count})",
        "subject.monthly": "{list} : résumé mensuel du {date} ({count})",
        "count.one": "{n} circulaire",
        "count.many": "{n} circulaires",
        "heading.weekly": "Résumé hebdomadaire : {count}",
        "heading.monthly": "Résumé mensuel : {count}",
        "intro": "Voici les circulaires envoyées à {list} depuis votre dernier résumé.",
        "number": "Circulaire n° {number}",
        "read": "Lire la circulaire complète",
        "attachments": "Pièces jointes",
        "not_public": (
            "Cette circulaire n'est pas dans les archives publiques ; "
            "le lien vous est réservé et expire."
        ),
        "why": (
            "Vous recevez ce résumé au lieu de chaque circulaire. "
            "Vous pouvez changer cela dans vos préférences."
        ),
    },
    "es": {
        "subject.weekly": "{list}: resumen semanal, {date} ({count})",
        "subject.monthly": "{list}: resumen mensual, {date} ({count})",
        "count.one": "{n} circular",
        "count.many": "{n} circulares",
        "heading.weekly": "Resumen semanal: {count}",
        "heading.monthly": "Resumen mensual: {count}",
        "intro": "Estas son las circulares enviadas a {list} desde su último resumen.",
        "number": "Circular n.º {number}",
        "read": "Leer la circular completa",
        "attachments": "Archivos adjuntos",
        "not_public": (
            "Esta circular no está en el archivo público; el enlace es solo para usted y caduca."
        ),
        "why": (
            "Recibe este resumen en lugar de cada circular. Puede cambiarlo en sus preferencias."
        ),
    },
    "ar": {
        "subject.weekly": "{list}: الموجز الأسبوعي، {date} ({count})",
        "subject.monthly": "{list}: الموجز الشهري، {date} ({count})",
        "count.one": "تعميم واحد",
        "count.two": "تعميمان",
        "count.few": "{n} تعاميم",
        "count.many": "{n} تعميمًا",
        "count.other": "{n} تعميم",
        "heading.weekly": "الموجز الأسبوعي: {count}",
        "heading.monthly": "الموجز الشهري: {count}",
        "intro": "فيما يلي التعاميم المرسلة إلى {list} منذ آخر موجز وصلك.",
        "number": "التعميم رقم {number}",
        "read": "اقرأ التعميم كاملاً",
        "attachments": "المرفقات",
        "not_public": "هذا التعميم ليس في الأرشيف العام؛ الرابط خاص بك وتنتهي صلاحيته.",
        "why": "تتلقى هذا الموجز بدلاً من كل تعميم على حدة، ويمكنك تغيير ذلك من تفضيلاتك.",
    },
    "zh": {
        "subject.weekly": "{list}：每周摘要，{date}（{count}）",
        "subject.monthly": "{list}：每月摘要，{date}（{count}）",
        "count.one": "{n} 份通函",
        "count.many": "{n} 份通函",
        "heading.weekly": "每周摘要：{count}",
        "heading.monthly": "每月摘要：{count}",
        "intro": "以下是自您上次收到摘要以来发送给{list}的通函。",
        "number": "第 {number} 号通函",
        "read": "阅读通函全文",
        "attachments": "附件",
        "not_public": "此通函未列入公开档案；该链接仅供您本人使用，并会过期。",
        "why": "您收到的是摘要，而不是每一份通函。您可以在偏好设置中更改。",
    },
    "ru": {
        "subject.weekly": "{list}: еженедельная сводка, {date} ({count})",
        "subject.monthly": "{list}: ежемесячная сводка, {date} ({count})",
        "count.one": "{n} циркуляр",
        "count.few": "{n} циркуляра",
        "count.many": "{n} циркуляров",
        "heading.weekly": "Еженедельная сводка: {count}",
        "heading.monthly": "Ежемесячная сводка: {count}",
        "intro": "Вот циркуляры, отправленные в {list} после вашей последней сводки.",
        "number": "Циркуляр № {number}",
        "read": "Читать циркуляр полностью",
        "attachments": "Вложения",
        "not_public": (
            "Этого циркуляра нет в открытом архиве; ссылка предназначена только для вас "
            "и действует ограниченное время."
        ),
        "why": (
            "Вы получаете эту сводку вместо отдельных циркуляров. Это можно изменить в настройках."
        ),
    },
}


def words(language: str) -> Mapping[str, str]:
    """The phrases for a language, English for any phrase or language not written here."""
    own = _WORDS.get(base_language(language), {})
    return {**_WORDS[DEFAULT_LANGUAGE], **own}


def count_phrase(language: str, count: int) -> str:
    """ "3 circulars", with the plural form the language's CLDR rules choose for the count
    (Russian has three: 1 and 21 циркуляр, 2 циркуляра, 5 циркуляров)."""
    table = words(language)
    try:
        form = Locale.parse(base_language(language) or DEFAULT_LANGUAGE).plural_form(count)
    except (ValueError, UnknownLocaleError):
        form = "one" if count == 1 else "other"
    phrase = table.get(f"count.{form}")
    if phrase is None:
        # A language written here with fewer forms: its singular for 1, its plural otherwise.
        phrase = table["count.one"] if count == 1 else table["count.many"]
    return phrase.format(n=count)
