"""Generate the demo documents under ``sample_docs/`` deterministically.

Usage::

    python scripts/make_sample_docs.py [OUT_DIR]      # default: <repo>/sample_docs

Everything is produced from a fixed seed with the standard library only (no network, no third-party
packages), so running the script twice gives byte-identical files:

* ``harbor_chronicle.txt`` -- a long invented chronicle of the harbour town of Saltmere (about 70 KB of
  prose built from sentence templates and word lists), with a handful of unique, checkable facts planted
  at different depths, the last one inside the final few hundred tokens.
* ``field_report.pdf`` -- a multi-page wind-farm inspection report with a real text layer, written by the
  small PDF writer below (Helvetica, WinAnsiEncoding, one uncompressed content stream per page).
* ``logs/web.log``, ``logs/db.log``, ``logs/worker.log.gz`` -- one hour of nginx, PostgreSQL and job-worker
  logs telling one incident: the database host's disk fills up, the database refuses writes, the web tier
  returns 500s, the worker's retries fail, and everything recovers.  The worker log is gzip-compressed
  with a fixed header (no file name, mtime 0).
* ``FACTS.md`` -- the question / expected answer / location table for all planted facts.

All text is original and generated here.
"""

from __future__ import annotations

import argparse
import gzip
import heapq
import io
import random
import string
import sys
import textwrap
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

SEED = 20240521
REPO = Path(__file__).resolve().parent.parent
DEFAULT_OUT = REPO / "sample_docs"


@dataclass(frozen=True)
class Fact:
    """One checkable fact.  ``evidence`` is the exact sentence/line in the source; ``answer`` may hold
    `backticked` spans, each of which occurs verbatim in the source."""

    source: str
    question: str
    answer: str
    evidence: str
    location: str = ""


def _items(text: str) -> list[str]:
    """A word list written compactly: items separated by semicolons, line breaks are just spaces."""
    return [item.strip() for item in " ".join(text.split()).split(";") if item.strip()]


# ============================================================================================ chronicle

FIRST_MEN = _items("""
    Bartholomew; Daniel; Francis; Gideon; Isaac; Jonah; Lemuel; Nathaniel; Obadiah; Rowan; Silas;
    Walter; Wilfred; Josiah; Elias; Caleb; Ambrose; Jacob; Peter; Hugh; Samuel; Edmund; Matthias; Reuben
""")
FIRST_WOMEN = _items("""
    Agnes; Cecily; Edith; Hester; Keziah; Martha; Prudence; Tamsin; Ursula; Abigail; Mercy; Honor;
    Dorcas; Thomasin; Loveday; Jennifer; Grace; Rosina; Bridget; Susanna
""")
SURNAMES = _items("""
    Pascoe; Trelawn; Hext; Brannick; Coombe; Hollin; Penrose; Tregear; Vosper; Dunning; Carew; Ashby;
    Lander; Kitto; Rowse; Skewes; Jory; Nance; Olver; Pender; Quick; Retallick; Sandry; Tonkin; Gribble;
    Moyle; Hocking; Treloar; Bolitho; Chenoweth
""")
SHIPS = _items("""
    the Margery Ann; the Patience; the Three Sisters; the Good Intent; the Kittiwake; the Providence;
    the Silver Dawn; the Endeavour; the Mary Tregear; the Curlew; the Brave Hope; the Fortune's
    Daughter; the Saltmere Lass; the Amity; the Star of the West; the Diligence; the Two Brothers; the
    Welcome Home
""")
SHIP_TYPES = _items("""
    brig; schooner; ketch; lugger; sloop; barque; snow
""")
GOODS = _items("""
    salted pilchards; barrels of herring; Baltic timber; bolts of sailcloth; tanned hides; roofing
    slate; lime for the fields; coal from the north; sea salt; tin ingots; barley; fleeces; coils of
    hemp rope; casks of tar; oak staves; china clay; wine from Oporto; iron nails; cheeses; dried cod
""")
TOWNS = _items("""
    Porthallow; Kestwick; Dunmore Sands; Aldercombe; Fennick; Holloway Cross; Brightwater; St. Ives
    Minor; Pendarrow; Marlow Bay; Treen; Coldharbour
""")
FOREIGN = _items("""
    Bordeaux; Lisbon; Cork; Bristol; Danzig; Bilbao; Genoa; Riga; Rotterdam; Naples; Newfoundland; the
    Azores
""")
STREETS = _items("""
    Tanner's Row; Chandler Street; Weaver's Lane; Fore Street; the Ropewalk; Quay Hill; Mill Stream
    Lane; Chapel Steps; Custom House Lane; Cooper's Court; Market Strand; Lantern Hill; Net Loft Alley
""")
QUAYS = _items("""
    the Cold Quay; the North Mole; the Fish Strand; the Old Slip; the Shingle
""")
HEADLANDS = _items("""
    Harrow Point; Black Head; the Mewstone; Carn Du; Pollard's Nose
""")
MEETING = _items("""
    the Guildhall; the upper room of the Anchor inn; the vestry of St. Brannoc's; the long room above
    the fish market; the Custom House
""")
MONTHS = _items("""
    January; February; March; April; May; June; July; August; September; October; November; December
""")
SEASONS = _items("""
    spring; summer; autumn; winter
""")
TRADES = _items("""
    cooper; sailmaker; net-mender; chandler; shipwright; baker; smith; ropemaker; carter; pilot; tanner;
    schoolmistress; midwife; innkeeper; miller; boatbuilder
""")
DIRECTIONS = _items("""
    south-west; north-east; west; south; north-west; east
""")
NUM_WORDS = _items("""
    three; four; five; six; seven; eight; nine; ten; eleven; twelve; fourteen; fifteen; twenty; thirty;
    forty
""")
VICES = _items("""
    drunkenness on the Sabbath; card-playing; the landing of uncustomed goods; idleness among the
    apprentices; the keeping of fighting cocks; gossip at the well
""")
BUILDINGS = _items("""
    a new market house; a school room beside the chapel; a row of almshouses; a second fish cellar; a
    stone bridge over the Mill Stream; a public pump on Fore Street; a coal store by the quay; a reading
    room for the seamen
""")
COUNCIL_ACTIONS = [
    "pave the lower half of Fore Street",
    "forbid the dumping of fish offal in the inner harbour",
    "appoint a second night watchman",
    "lease the common meadow to the miller",
    "repair the steps below Chapel Steps",
    "buy a fire engine from a maker in Bristol",
    "limit the number of alehouses to six",
    "build a pound for stray animals",
]
REQUESTS = _items("""
    the market be moved to a Saturday; a lamp be hung at the head of the quay; the pilots be licensed;
    the common well be cleaned; the fair be shortened by a day; the tolls on the turnpike road be
    reduced
""")
EXPENSES = _items("""
    new oars for the pilot gig; the mending of the town pump; a silver cup for the regatta; the feast on
    the king's birthday; tarring the roof of the Guildhall; the salary of the beadle; carting sand for
    the roads
""")
OFFENCES = _items("""
    selling short measure; letting his pigs loose in the churchyard; brawling on the quay; watering the
    ale; mooring across the fairway; cutting turf on the common
""")

YEAR_OPENERS = [
    "The year {year} opened with {weather}.",
    "In {year} the town counted some {pop} souls, most of them bound to the sea in one way or another.",
    "The records for {year} are thin, but what survives speaks of {theme}.",
    "By the {season} of {year} the mood in the town had changed, and the talk on the quay was of {theme}.",
    "The {season} of {year} is remembered chiefly for {theme}.",
    "The parish book for {year} begins, as it so often does, with {weather}.",
    "Those who kept accounts in {year} wrote little of politics and a great deal about {theme}.",
    "It was in {year} that {theme} first became the common talk of Saltmere.",
    "Little of note is recorded for the early months of {year}, save {weather}.",
    "{year} was, by every account, a year of {theme}.",
]
WEATHER = [
    "a week of snow that closed the road to {town}",
    "a spell of fog so thick the boats stayed in",
    "heavy rain that washed the mud of {street} down onto the quay",
    "a calm so long the mills stood idle",
    "a gale from the {direction} that stripped slates from half the roofs in the lower town",
    "hard frost and empty nets",
    "mild weather and an early spring",
    "storms that kept the fleet in harbour for most of {month}",
]
THEMES = [
    "poor catches and rising debts",
    "the quarrel between the seine owners",
    "the price of salt",
    "the building of {building}",
    "the smugglers working out of the coves beyond {headland}",
    "a run of good seasons",
    "sickness among the children of the lower town",
    "the new turnpike road",
    "the press gang and the fear of it",
    "the rivalry with the merchants of {town}",
    "the great catch off {headland}",
    "the rebuilding of the houses on {street}",
]

BODY = {
    "fishing": [
        "The pilchard shoals came into the bay in {month}, and the huers on {headland} cried them in from "
        "first light.",
        "{man_full}, who kept {num} boats off {quay}, landed more fish that season than any man living "
        "could remember.",
        "Salt ran short by {month}, and the cellars along {street} stood half empty while the catch spoiled "
        "on the shingle.",
        "The seine crews quarrelled over the best stations, and the matter went twice before the magistrate "
        "at {town}.",
        "Women of the town worked the fish cellars in shifts, pressing the catch into hogsheads for "
        "shipment to {foreign}.",
        "A poor season left many families in debt to the chandlers, and {man_full} is said to have forgiven "
        "more than he ever collected.",
        "Nets were mended on {quay} by lamplight, and the smell of tar and brine hung over the lower town "
        "for weeks.",
        "The herring failed that autumn, and the boats went as far as {town} in search of them.",
        "One night in {month} the boats came home so laden that the gunwales were nearly awash, and the "
        "whole town turned out to carry baskets.",
        "The fish tithe was once again refused by the crews of {quay}, and the vicar was obliged to let it "
        "lie.",
        "{woman_full} kept the tally of the cellars that season, and her neat figures survive in the town "
        "chest.",
        "A new kind of drift net, brought from {town}, was tried and then abandoned as too costly to mend.",
        "Mackerel were taken in such numbers in {month} that they were sold to the farmers for dressing "
        "the fields.",
        "The boats of {town} were seen fishing inside the bay, and there were hard words and a broken oar "
        "before they left.",
    ],
    "trade": [
        "{ship}, a {ship_type} of {tons} tons, sailed for {foreign} with a cargo of {goods} and returned in "
        "{month} with {goods2}.",
        "Revenue officers from {town} boarded {ship} and found {num} casks of brandy hidden beneath the "
        "ballast.",
        "Prices at the quay rose sharply, and a bushel of barley cost nearly twice what it had the year "
        "before.",
        "{man_full} opened a chandlery on {street}, selling rope, tar, lamp oil and ship's biscuit to the "
        "crews.",
        "The harbour dues were raised, much to the anger of the masters who traded out of {town}.",
        "{ship} was lost with all hands somewhere off {foreign}, and the town was long in mourning.",
        "A merchant from {foreign} took rooms at the Anchor and bought up every barrel of {goods} he could "
        "find.",
        "Trade with {foreign} fell away for a time, and the warehouses on {street} were let as lodgings.",
        "{woman_full}, widow of a ship's master, took over her husband's share in {ship} and ran it at a "
        "profit for a dozen years.",
        "The first cargo of {goods} ever landed at Saltmere came in aboard {ship}, and people walked from "
        "{town} to see it.",
        "Carts loaded with {goods} crowded {street} from dawn, bound for the market at {town}.",
        "{ship} came home after {num} months away, her master swearing he would never again round the "
        "Lizard in {month}.",
        "Shares in {ship} were sold in sixty-fourths, and half the households of the lower town held one.",
    ],
    "council": [
        "The council met in {meeting} and voted, after a long and bitter evening, to {action}.",
        "{man_full} was chosen as portreeve, an office he held with more patience than distinction.",
        "A petition signed by {num} householders asked that {request}.",
        "The accounts show {amount} spent on {expense}, a sum that some thought extravagant.",
        "The quarrel over the common grazing was settled at last, though neither side declared itself "
        "content.",
        "{man_full} refused to pay the rate, arguing that the road past his door had not been mended in "
        "living memory.",
        "The town's charter was read aloud in {meeting}, as the custom was, and the freemen drank to it.",
        "A committee was formed to look into the state of the quays, and it reported, slowly, that they "
        "were in poor repair.",
        "The beadle was dismissed for sleeping on duty, and {man_full} took his place.",
        "The council wrote to the lord of the manor at {town} asking for timber, and received a polite "
        "refusal.",
        "{man_full} was fined {amount} for {offence}, though the chronicle hints that the fine was never "
        "paid.",
        "An election for the council was held in {month} and caused more shouting than anyone had expected.",
    ],
    "church": [
        "At midsummer the town kept its old feast, with fiddlers on the quay and a procession of boats "
        "dressed in ribbons.",
        "The vicar, the Reverend {man_full}, preached against {vice} with such force that the alehouse on "
        "{street} closed for a week.",
        "{man_full} and {woman_full} were married at St. Brannoc's in {month}, and the wedding party danced "
        "until the tide turned.",
        "A Methodist preacher came over from {town} and spoke on {quay} to a crowd of several hundred.",
        "The churchwardens bought a new pulpit cloth and repaired the north window, which had let in the "
        "rain for years.",
        "The harvest supper was held in the net loft on {street}, and it was said that no one went home "
        "hungry.",
        "Children of the town sang carols from house to house at Christmas and were given figgy pudding "
        "and pennies.",
        "At Easter the boats were blessed on {quay}, a custom older than anyone could explain.",
        "The old chapel on {street} was repaired by subscription, {woman_full} giving more than any other "
        "single household.",
        "A travelling company played in the Guildhall for three nights in {month}, to the disapproval of "
        "the vicar.",
        "The regatta was revived in {month}, and the crew of {ship} won the silver cup.",
    ],
    "building": [
        "Work began on {building}, paid for partly by subscription and partly by the harbour dues.",
        "The old cottages on {street} were pulled down and replaced with a terrace of slate-hung houses.",
        "A new slip was cut into the rock below {headland} so that larger boats could be hauled out for "
        "repair.",
        "{man_full}, a {trade} from {town}, built himself a house on {street} that was thought too grand "
        "for a tradesman.",
        "The road to {town} was widened and given a hard surface, which halved the time of the carrier.",
        "A fire broke out in a bakehouse on {street} and burned {num} houses before the bucket chain could "
        "check it.",
        "The mill on the Mill Stream was given a new wheel, cast in {town}, and ground twice as fast as "
        "before.",
        "{building} was finished in {month}, a year later than promised and well over the estimate.",
        "The quay steps were rebuilt in dressed stone after a winter in which they had all but fallen into "
        "the sea.",
        "New warehouses went up along {street}, their doors opening directly onto the water at high tide.",
    ],
    "weather": [
        "A gale from the {direction} drove {num} vessels onto the rocks below {headland}, and the town "
        "buried its dead in {month}.",
        "The winter was so hard that ice formed along the edges of the inner harbour, which no one then "
        "living had seen.",
        "Fog lay over the bay for most of {month}, and the boats stayed in rather than risk the reefs.",
        "Lightning struck the tower of St. Brannoc's in {month} and split one of the pinnacles.",
        "A long drought dried the Mill Stream to a trickle, and water was sold by the bucket on {street}.",
        "The spring tides of {month} came over {quay} and into the cellars of the lower town.",
        "A whirlwind was seen over the bay in {month}, and an old sailor declared it an omen of war.",
        "The summer was so fine that visitors came from {town} merely to bathe in the sea, which the older "
        "people thought a great folly.",
        "Snow lay on Lantern Hill until {month}, and sheep were lost on the moor above the town.",
    ],
    "people": [
        "{man_full}, the {trade}, died in {month} at the age of {age}, and half the town followed the coffin "
        "up {street}.",
        "It was in this year that {man_full} first came to Saltmere, a {trade} from {town} with nothing but "
        "a chest of tools.",
        "{woman_full}, the town's {trade}, was said to know the business of every family from {quay} to the "
        "top of Lantern Hill.",
        "{man_full} went to sea at eleven and came home at fifty a wealthy man, or so he let it be believed.",
        "{woman_full} brought up {num} children in a cottage on {street}, and all of them lived to be grown.",
        "The {trade} {man_full} took an apprentice, {man_full2}, who would later outdo his master.",
        "{woman_full} kept a school in her front room on {street}, teaching letters and sums for a penny a "
        "week.",
        "{man_full} was taken by the press gang on {quay} and was not heard of again for {num} years.",
        "{woman_full} died in {month} aged {age}, and left her savings to the poor of the parish.",
        "{man_full} and his brother quarrelled over their father's boat, and the feud outlived them both.",
        "A stranger calling himself {man_full} lodged at the Anchor for a season and left owing the "
        "innkeeper a great deal.",
    ],
}
CLOSERS = [
    "Such were the small affairs of a small town, and yet to those who lived them they were everything.",
    "The chronicler of those years, writing long after, admits that much of this rests on the memory of "
    "old men.",
    "Whether this was wise, later generations would argue at length.",
    "The town went on much as before, as towns do.",
    "Of the rest of that year the books say almost nothing.",
    "It is a measure of the place that this was still being talked about a generation later.",
    "The old people of Saltmere used to say that the sea gives with one hand and takes with the other.",
    "Few in the town could have guessed how much would change in the years that followed.",
    "The entry ends there, in a hand that grows more hurried towards the foot of the page.",
    "So the matter rested, for a while.",
]

# Planted chronicle facts: (chapter index, paragraph position, hand-written paragraph, fact fields).
CHRONICLE_FACTS: list[tuple[int, int, str, str, str, str]] = [
    (
        0,
        3,
        "In 1706 a light was first kept on Harrow Point, in a squat stone tower paid for by the merchants "
        "of the quay. The lighthouse keeper of Saltmere was a woman named Ilse Marrow. She trimmed the "
        "wicks and polished the reflectors every evening for thirty-one years, and the masters said they "
        "could set their course by her lamp.",
        "The lighthouse keeper of Saltmere was a woman named Ilse Marrow.",
        "Who was the lighthouse keeper of Saltmere?",
        "`Ilse Marrow`",
    ),
    (
        4,
        4,
        "The long argument over the sea defences ended in 1756, when the subscription at last reached the "
        "sum that was wanted. The harbour wall was rebuilt that year with granite from the Carrow quarry. "
        "The stone came round by sea in flat-bottomed barges, and the work took two summers to finish.",
        "The harbour wall was rebuilt that year with granite from the Carrow quarry.",
        "Where did the stone for the rebuilt harbour wall come from?",
        "granite from `the Carrow quarry`",
    ),
    (
        7,
        6,
        "For years the town had been called to church and warned of storms by a small cracked hand-peal "
        "borrowed from a wreck. The harbour's great bell was cast in 1794 by the foundry of Tobias Wren. "
        "It was hung in a timber frame at the head of the quay, and its note was said to carry clear to "
        "the far side of the bay.",
        "The harbour's great bell was cast in 1794 by the foundry of Tobias Wren.",
        "When was the harbour's great bell cast, and by whom?",
        "in `1794`, by `the foundry of Tobias Wren`",
    ),
    (
        14,
        4,
        "The watch was kept night and day while the water stood in the lower town, for there were thieves "
        "about who would strip an empty house to the rafters. The town's secret password in the winter of "
        "the flood was 'blue heron'. Anyone who came along the quay after dark without giving it was held "
        "at the Guildhall until morning.",
        "The town's secret password in the winter of the flood was 'blue heron'.",
        "What was the town's secret password in the winter of the flood?",
        "`blue heron`",
    ),
]
LAST_FACT = (
    "The ferry to Gull Island leaves every morning at seven o'clock.",
    "When does the ferry to Gull Island leave?",
    "`every morning at seven o'clock`",
)
FLOOD_PARAGRAPHS = [
    "The winter of the flood began with rain that did not stop for eleven days. On the night of the "
    "twelfth a spring tide met the swollen Mill Stream at the foot of the town, and by morning the water "
    "stood four feet deep in the cellars of Fore Street and lapped at the steps of the Guildhall.",
    "Boats were rowed up Chandler Street to take the old and the sick from upper windows, and for a "
    "fortnight the families of the lower town slept in the church, the schoolroom and the net lofts on "
    "the hill. The water went down slowly, leaving a crust of mud and weed on every floor it had reached.",
]
ENDING = [
    "Saltmere today is a quieter place than the town described in these pages. The fish cellars have "
    "become workshops and holiday lets, the rope-walk is a car park, and the last of the seine boats lies "
    "restored in a shed behind the Guildhall, where schoolchildren are taken to see it. The quay is busier "
    "in August than it ever was in the great pilchard years, though what it lands now is mostly visitors.",
    "For those who want to see the coast as the old crews saw it, there is still a way out across the "
    "water. " + LAST_FACT[0] + " It waits at the foot of the Cold Quay for a quarter of an hour, and comes "
    "back in the late afternoon with the tide.",
    "Here ends the chronicle of Saltmere, so far as it has been written down.",
]
# Words the generated filler must never use, so each planted fact stays unique.
RESERVED = _items("""
    lighthouse; Marrow; granite; Carrow; bell; Wren; password; heron; flood; ferry; Gull Island; seven
    o'clock
""")

ROMAN = _items("""
    I; II; III; IV; V; VI; VII; VIII; IX; X; XI; XII; XIII; XIV; XV; XVI; XVII; XVIII
""")
CHAPTER_TITLES = _items("""
    The Founding and the First Years; The Growth of the Fishery; Merchants and Masters; The Years of the
    Smugglers; The New Harbour Wall; Storms and Wrecks; The Quarrel of the Seines; The Years of the
    Bell; War and the Press Gang; Peace and the Pilchard Trade; The New Road; Chapel and Church; The
    Coming of Steam; The Hungry Years; The Winter of the Flood; The Railway Comes Near; Later Years and
    the Town Today
""")
FIRST_YEAR = 1702
YEARS_PER_CHAPTER = 12


class SentenceMaker:
    """Fills sentence templates from the word lists, never repeating a finished sentence when it can help
    it."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.used: set[str] = set()
        self.year = FIRST_YEAR
        self.bags: dict[int, list[str]] = {}

    def _slot(self, name: str) -> str:
        r = self.rng
        simple: dict[str, Callable[[], str]] = {
            "man_full": lambda: f"{r.choice(FIRST_MEN)} {r.choice(SURNAMES)}",
            "man_full2": lambda: f"{r.choice(FIRST_MEN)} {r.choice(SURNAMES)}",
            "woman_full": lambda: f"{r.choice(FIRST_WOMEN)} {r.choice(SURNAMES)}",
            "ship": lambda: r.choice(SHIPS),
            "ship_type": lambda: r.choice(SHIP_TYPES),
            "tons": lambda: str(r.randrange(40, 320, 5)),
            "goods": lambda: r.choice(GOODS),
            "goods2": lambda: r.choice(GOODS),
            "town": lambda: r.choice(TOWNS),
            "foreign": lambda: r.choice(FOREIGN),
            "street": lambda: r.choice(STREETS),
            "quay": lambda: r.choice(QUAYS),
            "headland": lambda: r.choice(HEADLANDS),
            "meeting": lambda: r.choice(MEETING),
            "month": lambda: r.choice(MONTHS),
            "season": lambda: r.choice(SEASONS),
            "trade": lambda: r.choice(TRADES),
            "direction": lambda: r.choice(DIRECTIONS),
            "num": lambda: r.choice(NUM_WORDS),
            "age": lambda: str(r.randint(38, 96)),
            "amount": lambda: r.choice([f"{r.randint(2, 90)} pounds", f"{r.randint(3, 19)} shillings"]),
            "vice": lambda: r.choice(VICES),
            "building": lambda: r.choice(BUILDINGS),
            "action": lambda: r.choice(COUNCIL_ACTIONS),
            "request": lambda: r.choice(REQUESTS),
            "expense": lambda: r.choice(EXPENSES),
            "offence": lambda: r.choice(OFFENCES),
            "year": lambda: str(self.year),
            "pop": lambda: f"{(600 + (self.year - FIRST_YEAR) * 14) // 50 * 50 + r.choice([0, 50, 100]):,}",
            "weather": lambda: self.fill(r.choice(WEATHER)),
            "theme": lambda: self.fill(r.choice(THEMES)),
        }
        return simple[name]()

    def fill(self, template: str) -> str:
        names = dict.fromkeys(f for _, f, _, _ in string.Formatter().parse(template) if f)
        return template.format(**{n: self._slot(n) for n in names})

    def sentence(self, templates: list[str]) -> str:
        """A filled sentence from ``templates``.  Templates are drawn from a shuffled bag (refilled when
        empty), so each one is used about equally often and never twice in quick succession."""
        bag = self.bags.setdefault(id(templates), [])
        for _ in range(40):
            if not bag:
                bag.extend(self.rng.sample(templates, len(templates)))
            text = self.fill(bag.pop())
            text = text[0].upper() + text[1:]
            if text not in self.used:
                break
        self.used.add(text)
        return text


def make_chronicle(rng: random.Random) -> tuple[str, list[Fact]]:
    """Build the chronicle text and return it with its planted facts (locations filled in)."""
    maker = SentenceMaker(rng)
    planted = {(c, p): (para, ev, q, a) for c, p, para, ev, q, a in CHRONICLE_FACTS}
    topics = list(BODY)
    parts: list[str] = [
        "THE CHRONICLE OF SALTMERE",
        "Being an account of the harbour town of Saltmere, its people, its trade and its weather, from the "
        "first houses on the quay to the present day, gathered from parish books, council minutes and the "
        "memories of the old.",
    ]
    n_chapters = len(CHAPTER_TITLES)
    for ch in range(n_chapters):
        start = FIRST_YEAR + ch * YEARS_PER_CHAPTER
        end = start + YEARS_PER_CHAPTER - 1
        last = ch == n_chapters - 1
        span = "" if last else f", {start} to {end}"
        parts.append(f"CHAPTER {ROMAN[ch]}. {CHAPTER_TITLES[ch].upper()}{span}")
        n_paras = 5 if last else 8
        for p in range(n_paras):
            if (ch, p) in planted:
                parts.append(planted[(ch, p)][0])
                continue
            if ch == 14 and p in (2, 3):
                parts.append(FLOOD_PARAGRAPHS[p - 2])
                continue
            maker.year = start + (p * YEARS_PER_CHAPTER) // n_paras
            sentences = [maker.sentence(YEAR_OPENERS)]
            chosen = rng.sample(topics, 2)
            for i in range(rng.randint(3, 5)):
                sentences.append(maker.sentence(BODY[chosen[i % 2]]))
            if rng.random() < 0.35:
                sentences.append(maker.sentence(CLOSERS))
            parts.append(" ".join(sentences))
        if last:
            parts.extend(ENDING)
    text = "\n\n".join(parts) + "\n"

    filler = text
    for _, _, para, *_ in CHRONICLE_FACTS:
        filler = filler.replace(para, "")
    for para in FLOOD_PARAGRAPHS + ENDING[:2]:
        filler = filler.replace(para, "")
    for word in RESERVED:
        assert word not in filler, f"generated filler uses the reserved word {word!r}"

    facts: list[Fact] = []
    all_facts = [(ev, q, a) for _, _, _, ev, q, a in CHRONICLE_FACTS] + [LAST_FACT]
    for ev, q, a in all_facts:
        assert text.count(ev) == 1, ev
        pos = text.index(ev)
        tail_tokens = (len(text) - pos) // 4
        where = f"char {pos:,} of {len(text):,} ({100 * pos // len(text)}%)"
        if tail_tokens < 600:
            where += f", ~{tail_tokens} tokens from the end"
        facts.append(Fact("harbor_chronicle.txt", q, a, ev, where))
    return text, facts


# ============================================================================================ PDF report

PDF_FACTS = [
    (
        "The inspection was led by senior engineer Priya Castellan.",
        "Who led the wind-farm inspection?",
        "`Priya Castellan`",
    ),
    ("Turbine 14 showed a cracked blade root.", "Which turbine showed a cracked blade root?", "`Turbine 14`"),
    (
        "Turbine 14 must remain shut down until blade B is replaced.",
        "What does the report recommend for Turbine 14?",
        "`remain shut down until blade B is replaced`",
    ),
]

REPORT_INTRO = [
    ("h1", "Kestrel Ridge Wind Farm - Field Inspection Report FR-2291"),
    (
        "p",
        "Prepared by Northgate Renewables Inspection Services for Kestrel Ridge Energy Ltd. "
        "Inspection dates: 9 to 13 September 2024. Report issued: 20 September 2024. "
        "Classification: client confidential.",
    ),
    ("h2", "1. Summary"),
    (
        "p",
        "This report records a planned mid-life inspection of the 24 turbines at Kestrel Ridge. "
        + PDF_FACTS[0][0]
        + " The team of four inspected every tower, nacelle and rotor, took vibration "
        "and oil samples from every drive train, and checked a sample of foundation anchor bolts. "
        "Twenty-two turbines are in good or acceptable condition. One turbine has a serious structural "
        "defect in a blade and one has a gearbox bearing that is wearing faster than expected. "
        "Section 7 lists the recommended actions in order of urgency.",
    ),
    ("h2", "2. Site and scope"),
    (
        "p",
        "Kestrel Ridge lies on an exposed upland ridge at 410 to 465 metres above sea level. The farm "
        "has 24 turbines of 2.3 MW rated power, 80 metre hub height and 93 metre rotor diameter, "
        "arranged in three rows (A, B and C) of eight machines each. The turbines were commissioned in "
        "2012 and have run for between 86,000 and 91,000 hours. The scope covered the blades, hub, "
        "pitch system, main shaft, gearbox, generator, yaw system, tower flanges, the electrical "
        "cabinets at the tower base, and the foundations. The substation and the collection cables "
        "were outside the scope.",
    ),
    ("h2", "3. Method"),
    (
        "p",
        "Blades were inspected from the ground with a 600 mm telephoto lens and, for every turbine, by "
        "a rope-access technician on all three blades. Each turbine was stopped and locked out while "
        "it was inspected; the rotor was turned so that each blade pointed down in turn. Vibration "
        "was measured on the main bearing, the gearbox and the generator at rated speed before the "
        "stop, using portable accelerometers. Gearbox oil was sampled hot and sent for particle "
        "counting and spectrographic analysis. Ten per cent of the foundation anchor bolts, chosen at "
        "random, were torque-checked with a calibrated hydraulic wrench.",
    ),
    (
        "p",
        "Findings are graded as follows. Grade 1: no action. Grade 2: monitor at the next routine "
        "visit. Grade 3: repair within six months. Grade 4: repair before the winter season. "
        "Grade 5: stop the turbine and repair before it runs again.",
    ),
    ("h2", "4. Conditions during the inspection"),
    (
        "p",
        "The weather was dry on four of the five days. The mean wind speed at hub height over the "
        "inspection was 7.4 metres per second, with gusts to 16 metres per second on 11 September, "
        "when rope access was suspended for the afternoon. Air temperature ranged from 6 to 15 "
        "degrees Celsius. Visibility was good except on the morning of 12 September, when low cloud "
        "covered the upper half of the towers in row C until about 10:30.",
    ),
]

REPORT_FINDINGS = [
    ("h2", "6. Findings"),
    (
        "p",
        PDF_FACTS[1][0] + " The crack is on blade B, on the pressure side, about 0.9 metres from the "
        "root flange, and runs 380 mm along the chord line. Dye penetrant testing confirmed that it "
        "passes through the outer laminate. The blade has probably been cracked for some months: the "
        "edges are weathered and there is staining from water ingress. A crack in this position can "
        "grow quickly under cyclic loading, and a blade root failure would release the whole blade. "
        "The turbine was stopped on 12 September and has not been restarted. This finding is grade 5.",
    ),
    (
        "p",
        "Turbine 6 (row A) showed elevated vibration on the gearbox intermediate shaft, 6.8 mm/s "
        "against an alarm level of 7.1 mm/s, and its oil sample contained iron particles at roughly "
        "three times the fleet average. This pattern points to early wear of the intermediate shaft "
        "bearing. The bearing is not yet failing, but it is ageing faster than the others. Grade 4.",
    ),
    (
        "p",
        "Leading-edge erosion was found on 17 of the 72 blades. In every case it was shallow and "
        "confined to the outer third of the blade, where tip speed is highest. None of it has yet "
        "reached the laminate. It reduces output slightly and will worsen if left. Grade 3.",
    ),
    (
        "p",
        "Two tower flange bolts on turbine 19 were found below their target torque (82 and 85 per "
        "cent). They were re-tensioned on the spot, and the remaining bolts on that flange were then "
        "checked and found in order. Grade 2.",
    ),
    (
        "p",
        "All foundation bolts that were tested held their torque. The grout beneath the tower base of "
        "turbine 3 shows minor surface cracking that is cosmetic at present. Grade 2.",
    ),
    (
        "p",
        "The electrical cabinets were clean and dry. Thermal images showed no hot joints. The yaw "
        "brakes on turbines 8 and 21 were worn close to their limit and were replaced during the visit.",
    ),
]

REPORT_RECOMMENDATIONS = [
    ("h2", "7. Recommendations"),
    (
        "p",
        "R1 (urgent). " + PDF_FACTS[2][0] + " The replacement blade should be a matched blade from "
        "the manufacturer's spares pool, and the hub bolts of blade B should be replaced at the same "
        "time. Before the turbine is restarted, the other two blades of turbine 14 should be inspected "
        "by ultrasound at the root, since the same load history applies to them.",
    ),
    (
        "p",
        "R2 (before winter). Replace the intermediate shaft bearing in the gearbox of turbine 6, or, "
        "if that cannot be scheduled, fit an online vibration monitor to that gearbox and reduce its "
        "power limit to 80 per cent until the bearing is changed.",
    ),
    (
        "p",
        "R3 (within six months). Apply leading-edge protection tape or coating to the 17 eroded blades, "
        "starting with the six blades in row C, where the erosion is deepest.",
    ),
    (
        "p",
        "R4 (next routine visit). Re-check the tower flange bolts on turbine 19 and the grout at "
        "turbine 3, and sample the gearbox oil of turbine 6 again.",
    ),
    (
        "p",
        "R5 (fleet). Because the blade crack on turbine 14 was found only by rope access and not from "
        "the ground, ground-based inspection alone should not be relied on for blade roots. A rope "
        "access or drone inspection of all blade roots once a year is advised.",
    ),
    ("h2", "8. Sign-off"),
    (
        "p",
        "Inspection team: Priya Castellan (lead), Tomasz Ferreira (rope access), Aoife Lindqvist "
        "(drive train and oil analysis), Daniel Okoro (electrical). The findings in this report reflect "
        "the condition of the turbines on the dates of the inspection. Photographs, raw vibration "
        "spectra and laboratory certificates are held in the project file and are available on request.",
    ),
    ("p", "End of report."),
]

BLADE_NOTES = _items("""
    no defects; minor leading-edge erosion on blade A; minor leading-edge erosion on blades A and C;
    light lightning-receptor scorching on blade B; no defects; no defects; small chip in gelcoat near
    the tip of blade C; minor leading-edge erosion on blade B
""")
OTHER_NOTES = _items("""
    no further findings; yaw brake pads worn; small oil weep at the pitch cylinder of blade A; no
    further findings; tower door seal perished; no further findings; nacelle cover latch loose,
    refastened; no further findings
""")


def report_turbine_rows(rng: random.Random) -> list[tuple[str, str]]:
    """One paragraph per turbine with pseudo-random but plausible measurements."""
    rows: list[tuple[str, str]] = [
        ("h2", "5. Turbine-by-turbine observations"),
        (
            "p",
            "Vibration figures are overall velocity (RMS, 10 Hz to 1 kHz) at rated speed. Oil figures are "
            "ISO 4406 cleanliness codes. Hours are the operating hours recorded by the controller.",
        ),
    ]
    for t in range(1, 25):
        row = "ABC"[(t - 1) // 8]
        hours = rng.randint(86000, 91000)
        main = rng.uniform(0.8, 2.6)
        gear = rng.uniform(2.1, 4.9)
        gen = rng.uniform(0.9, 2.8)
        oil = f"{rng.choice([16, 17, 17, 18])}/{rng.choice([14, 15, 15])}/{rng.choice([11, 12, 12])}"
        blades = rng.choice(BLADE_NOTES)
        other = rng.choice(OTHER_NOTES)
        grade = 2 if blades.startswith("minor") else 1
        if t == 6:
            gear, oil, other, grade = 6.8, "19/17/14", "iron particles high in oil sample", 4
        if t == 8 or t == 21:
            other = "yaw brake pads worn, replaced"
        if t == 14:
            blades, other, grade = (
                "blade B root cracked, 380 mm, pressure side (see section 6)",
                "turbine stopped 12 September",
                5,
            )
        if t == 19:
            other = "two tower flange bolts below target torque, re-tensioned"
        rows.append(
            (
                "p",
                f"T{t:02d} (row {row}). Hours {hours:,}. Vibration: main bearing {main:.1f} mm/s, "
                f"gearbox {gear:.1f} mm/s, generator {gen:.1f} mm/s. Oil {oil}. Blades: {blades}. "
                f"Other: {other}. Grade {grade}.",
            )
        )
    return rows


def pdf_escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace("(", "\\(").replace(")", "\\)")


PAGE_W, PAGE_H = 612, 792  # US Letter
MARGIN_X, TOP_Y, BOTTOM_Y = 54, 740, 64
STYLES = {"h1": ("F2", 15, 22, 0), "h2": ("F2", 12.5, 17, 10), "p": ("F1", 11, 14, 6)}
WRAP = {"h1": 70, "h2": 80, "p": 90}


def layout_report(blocks: list[tuple[str, str]]) -> list[list[tuple[str, float, float, str]]]:
    """Wrap and paginate blocks into pages of (font, size, y, text) lines.  A block kind of ``"page"``
    forces a new page."""
    pages: list[list[tuple[str, float, float, str]]] = [[]]
    y = TOP_Y
    for kind, text in blocks:
        if kind == "page":
            if pages[-1]:
                pages.append([])
                y = TOP_Y
            continue
        font, size, leading, gap = STYLES[kind]
        lines = textwrap.wrap(text, WRAP[kind])
        if pages[-1]:
            y -= gap
        # keep a heading with at least two lines of what follows
        need = leading * (len(lines) + (3 if kind.startswith("h") else 0))
        if y - need < BOTTOM_Y and (kind.startswith("h") or len(lines) <= 3):
            pages.append([])
            y = TOP_Y
        for line in lines:
            if y < BOTTOM_Y:
                pages.append([])
                y = TOP_Y
            pages[-1].append((font, size, y, line))
            y -= leading
    return pages


def write_pdf(pages: list[list[tuple[str, float, float, str]]], title: str) -> bytes:
    """A minimal, valid PDF 1.4 file: catalog, page tree, two standard fonts, one page + content stream
    per page, an info dictionary, a classic xref table and trailer."""
    n = len(pages)
    objects: list[bytes] = []
    page_ids = [6 + 2 * i for i in range(n)]
    objects.append(b"<< /Type /Catalog /Pages 2 0 R >>")
    kids = " ".join(f"{p} 0 R" for p in page_ids)
    objects.append(f"<< /Type /Pages /Kids [{kids}] /Count {n} /MediaBox [0 0 {PAGE_W} {PAGE_H}] >>".encode())
    for base in ("Helvetica", "Helvetica-Bold"):
        objects.append(
            f"<< /Type /Font /Subtype /Type1 /BaseFont /{base} /Encoding /WinAnsiEncoding >>".encode()
        )
    objects.append(
        f"<< /Title ({pdf_escape(title)}) /Author (Northgate Renewables Inspection Services) "
        f"/Producer (infinicli make_sample_docs.py) /CreationDate (D:20240920090000Z) >>".encode()
    )
    for i, lines in enumerate(pages):
        ops = ["BT"]
        x, y = 0.0, 0.0
        cur: tuple[str, float] | None = None
        for font, size, ly, text in lines:
            if cur != (font, size):
                ops.append(f"/{font} {size:g} Tf")
                cur = (font, size)
            ops.append(f"{MARGIN_X - x:g} {ly - y:g} Td")
            x, y = MARGIN_X, ly
            ops.append(f"({pdf_escape(text)}) Tj")
        ops.append("ET")
        footer = f"FR-2291 Kestrel Ridge Wind Farm - page {i + 1} of {n}"
        ops += ["BT", "/F1 8 Tf", f"{MARGIN_X} 36 Td", f"({pdf_escape(footer)}) Tj", "ET"]
        stream = ("\n".join(ops) + "\n").encode("cp1252")
        objects.append(
            f"<< /Type /Page /Parent 2 0 R /Resources << /Font << /F1 3 0 R /F2 4 0 R >> >> "
            f"/Contents {page_ids[i] + 1} 0 R >>".encode()
        )
        objects.append(b"<< /Length %d >>\nstream\n" % len(stream) + stream + b"endstream")
    out = bytearray(b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n")
    offsets = []
    for num, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % num + body + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 %d\n" % (len(objects) + 1)
    out += b"0000000000 65535 f \n"
    for off in offsets:
        out += b"%010d 00000 n \n" % off
    out += b"trailer\n<< /Size %d /Root 1 0 R /Info 5 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (
        len(objects) + 1,
        xref,
    )
    return bytes(out)


def make_report(rng: random.Random) -> tuple[bytes, list[list[str]], list[Fact]]:
    """Return the PDF bytes, the text lines of each page (for checking), and the report's facts."""
    blocks = REPORT_INTRO + [("page", "")] + report_turbine_rows(rng) + [("page", "")] + REPORT_FINDINGS
    blocks += [("page", "")] + REPORT_RECOMMENDATIONS
    for _, text in blocks:
        text.encode("ascii")
    pages = layout_report(blocks)
    assert len(pages) >= 4, len(pages)
    pdf = write_pdf(pages, "Kestrel Ridge Wind Farm - Field Inspection Report FR-2291")
    page_text = [[line for *_, line in page] for page in pages]
    facts = []
    for ev, q, a in PDF_FACTS:
        joined = [" ".join(lines) for lines in page_text]
        page_no = next(i for i, t in enumerate(joined, start=1) if ev in t)
        facts.append(Fact("field_report.pdf", q, a, ev, f"page {page_no} of {len(pages)}"))
    return pdf, page_text, facts


# ============================================================================================ logs

DATE = "2024-05-21"
HOUR = 14
T_DISK_FULL = 23 * 60 + 7.318  # seconds after 14:00:00; the first error anywhere (db.log)
T_WRITES_FAIL = 23 * 60 + 11.0  # first refused write / first web 500
T_WORKER_FAIL = 23 * 60 + 26.431  # first failed worker job
T_FREED = 39 * 60 + 58.0  # disk space freed by the operator (not logged by postgres)
T_RECOVERED = 40 * 60 + 9.0  # first successful order again
T_REQUEUE = 42 * 60 + 10.0  # worker requeues the dead-lettered jobs
MAX_ATTEMPTS = 3
BREAKER_PAUSE = 90
BREAKER_THRESHOLD = 5
JOB_SQL = {
    "send_receipt": "INSERT INTO email_log (order_id, template, sent_at) VALUES ($1, 'receipt', now())",
    "update_inventory": "UPDATE stock SET reserved = reserved + $1 WHERE product_id = $2",
    "expire_carts": "DELETE FROM cart_items WHERE cart_id IN "
    "(SELECT id FROM carts WHERE updated_at < now() - interval '2 hours')",
}

WEB_IPS = _items("""
    203.0.113.14; 198.51.100.23; 192.0.2.77; 203.0.113.201; 198.51.100.145; 192.0.2.9; 203.0.113.58;
    198.51.100.7; 192.0.2.180; 203.0.113.99
""")
AGENTS = [
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/124.0 Safari/537.36",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_4) AppleWebKit/605.1.15 (KHTML, like Gecko) "
    "Version/17.4 Safari/605.1.15",
    "Mozilla/5.0 (X11; Linux x86_64; rv:125.0) Gecko/20100101 Firefox/125.0",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) "
    "Mobile/15E148",
    "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/124.0 Mobile Safari/537.36",
]
PRODUCTS = _items("""
    oak-desk-lamp; linen-throw; enamel-mug; wool-blanket; cast-iron-pan; rattan-basket; brass-hooks;
    stoneware-bowl; cedar-planter; copper-kettle
""")
SITE = "https://shop.example.com"
WRITE_SQL = {
    "/api/orders": "INSERT INTO orders (customer_id, total_cents, status, created_at) "
    "VALUES ($1, $2, 'new', now())",
    "/api/cart/items": "INSERT INTO cart_items (cart_id, product_id, qty) VALUES ($1, $2, $3)",
    "/api/login": "INSERT INTO sessions (token, customer_id, expires_at) VALUES ($1, $2, $3)",
    "/api/account/address": "UPDATE customers SET address = $1, updated_at = now() WHERE id = $2",
}
REL_FILES = {
    "/api/orders": "16421.2",
    "/api/cart/items": "16455",
    "/api/login": "16502.1",
    "/api/account/address": "16388",
    "send_receipt": "16530",
    "update_inventory": "16399.1",
    "expire_carts": "16455",
}


def clock(t: float, ms: bool = True, sep: str = ".") -> str:
    m, s = divmod(t, 60)
    whole = int(s)
    text = f"{HOUR:02d}:{int(m):02d}:{whole:02d}"
    if ms:
        text += f"{sep}{int(round((s - whole) * 1000)) % 1000:03d}"
    return text


@dataclass
class Line:
    t: float
    seq: int
    text: str


class Log:
    def __init__(self) -> None:
        self.lines: list[Line] = []

    def add(self, t: float, text: str) -> None:
        self.lines.append(Line(t, len(self.lines), text))

    def render(self) -> str:
        return "".join(ln.text + "\n" for ln in sorted(self.lines, key=lambda ln: (ln.t, ln.seq)))


def pg(t: float, pid: int, who: str, level: str, msg: str) -> str:
    prefix = f"{DATE} {clock(t)} UTC [{pid}] "
    if who:
        prefix += who + " "
    return f"{prefix}{level}:  {msg}"


def disk_error(rel: str) -> str:
    return f'could not extend file "base/16384/{rel}": No space left on device'


def make_logs(rng: random.Random) -> tuple[dict[str, str], list[Fact]]:
    web, db, worker = Log(), Log(), Log()
    failing = (T_WRITES_FAIL, T_FREED)
    web_pids = [30211, 30214, 30220, 30227]

    def db_write_error(t: float, pid: int, who: str, rel: str, sql: str) -> None:
        db.add(t, pg(t, pid, who, "ERROR", disk_error(rel)))
        db.add(t, pg(t, pid, who, "HINT", "Check free disk space."))
        db.add(t, pg(t, pid, who, "STATEMENT", sql))

    # ---------------------------------------------------------------- web tier (nginx access log)
    def access(
        t: float, ip: str, method: str, path: str, status: int, size: int, ref: str, ua: str, rt: float
    ) -> None:
        stamp = f"{21:02d}/May/2024:{clock(t, ms=False)} +0000"
        web.add(
            t, f'{ip} - - [{stamp}] "{method} {path} HTTP/1.1" {status} {size} "{ref}" "{ua}" rt={rt:.3f}'
        )

    for k in range(60):  # load-balancer health checks; they only run SELECT 1, so they keep passing
        t = k * 60 + 0.5
        access(
            t, "10.0.0.2", "GET", "/healthz", 200, 2, "-", "ELB-HealthChecker/2.0", rng.uniform(0.001, 0.004)
        )

    def page_request(t: float, ip: str, ua: str) -> None:
        kind = rng.choices(
            ["home", "catalog", "product", "api_product", "static", "search", "cart"], [2, 3, 5, 3, 4, 1, 2]
        )[0]
        ref = rng.choice([f"{SITE}/", f"{SITE}/catalog", "-", "https://www.example.org/search"])
        if kind == "home":
            access(t, ip, "GET", "/", 200, rng.randint(18000, 19500), ref, ua, rng.uniform(0.02, 0.09))
        elif kind == "catalog":
            access(
                t,
                ip,
                "GET",
                f"/catalog?page={rng.randint(1, 9)}",
                200,
                rng.randint(24000, 31000),
                ref,
                ua,
                rng.uniform(0.03, 0.14),
            )
        elif kind == "product":
            access(
                t,
                ip,
                "GET",
                f"/products/{rng.choice(PRODUCTS)}",
                200,
                rng.randint(12000, 16000),
                ref,
                ua,
                rng.uniform(0.02, 0.11),
            )
        elif kind == "api_product":
            access(
                t,
                ip,
                "GET",
                f"/api/products/{rng.randint(1000, 1099)}",
                200,
                rng.randint(600, 2400),
                ref,
                ua,
                rng.uniform(0.005, 0.04),
            )
        elif kind == "static":
            asset = rng.choice(["/static/css/app.3f9c1e.css", "/static/js/app.b71d04.js", "/favicon.ico"])
            status = rng.choice([200, 304, 304])
            access(
                t,
                ip,
                "GET",
                asset,
                status,
                0 if status == 304 else rng.randint(3000, 90000),
                ref,
                ua,
                rng.uniform(0.0, 0.003),
            )
        elif kind == "search":
            q = rng.choice(["lamp", "blanket", "mug", "kettle", "planter"])
            access(
                t, ip, "GET", f"/search?q={q}", 200, rng.randint(9000, 20000), ref, ua, rng.uniform(0.05, 0.3)
            )
        else:
            access(
                t,
                ip,
                "GET",
                "/api/cart",
                200,
                rng.randint(300, 1800),
                f"{SITE}/cart",
                ua,
                rng.uniform(0.005, 0.03),
            )

    def write_request(t: float, ip: str, ua: str, path: str | None = None) -> int:
        path = path or rng.choices(list(WRITE_SQL), [3, 4, 2, 1])[0]
        method = "PUT" if path == "/api/account/address" else "POST"
        ref = f"{SITE}/checkout" if path == "/api/orders" else f"{SITE}/cart"
        if failing[0] <= t < failing[1]:
            db_write_error(
                t - rng.uniform(0.004, 0.03),
                rng.choice(web_pids),
                "app@shop",
                REL_FILES[path],
                WRITE_SQL[path],
            )
            access(t, ip, method, path, 500, 33, ref, ua, rng.uniform(0.006, 0.02))
            return 500
        status = 201 if path in ("/api/orders", "/api/cart/items") else 200
        access(t, ip, method, path, status, rng.randint(90, 400), ref, ua, rng.uniform(0.02, 0.12))
        return status

    t = 2.0
    while t < 3599:
        k = rng.randrange(len(WEB_IPS))
        ip, ua = WEB_IPS[k], AGENTS[k % len(AGENTS)]
        quiet = T_DISK_FULL - 6 < t < T_WRITES_FAIL + 1 or T_FREED - 2 < t < T_RECOVERED + 1
        if rng.random() < 0.27 and not quiet:
            write_request(t, ip, ua)
        else:
            page_request(t, ip, ua)
        t += rng.expovariate(1 / 13.5)
    first_500 = write_request(T_WRITES_FAIL, WEB_IPS[1], AGENTS[1], "/api/orders")
    assert first_500 == 500
    recovered = write_request(T_RECOVERED, WEB_IPS[2], AGENTS[2], "/api/orders")
    assert recovered == 201

    # ---------------------------------------------------------------- database (postgres 13)
    db.add(0.0, pg(0.0, 1190, "", "LOG", "checkpoint starting: time"))
    for k in range(12):
        t0 = k * 300.0 + 0.012
        if k:
            db.add(t0, pg(t0, 1190, "", "LOG", "checkpoint starting: time"))
        t1 = t0 + rng.uniform(178, 181)
        if t1 < 3600:
            bufs = rng.randint(900, 2600)
            db.add(
                t1,
                pg(
                    t1,
                    1190,
                    "",
                    "LOG",
                    f"checkpoint complete: wrote {bufs} buffers ({bufs / 163.84:.1f}%); 0 WAL file(s) added, "
                    f"0 removed, {rng.randint(1, 2)} recycled; write={t1 - t0 - 0.05:.3f} s, "
                    f"sync={rng.uniform(0.004, 0.03):.3f} s, total={t1 - t0:.3f} s; "
                    f"sync files={rng.randint(20, 60)}, longest=0.00{rng.randint(2, 9)} s, average=0.001 s; "
                    f"distance={rng.randint(9000, 21000)} kB, estimate={rng.randint(15000, 19000)} kB",
                ),
            )
    pid = 31000
    for t in sorted(rng.uniform(30, 3570) for _ in range(16)):
        pid += rng.randint(3, 40)
        port = rng.randint(40000, 60999)
        app, host = rng.choice(
            [("web", "10.0.2.11"), ("web", "10.0.2.12"), ("worker", "10.0.3.5"), ("metabase", "10.0.4.20")]
        )
        user = {"web": "app", "worker": "worker", "metabase": "reporting"}[app]
        db.add(t, pg(t, pid, "[unknown]@[unknown]", "LOG", f"connection received: host={host} port={port}"))
        db.add(
            t + 0.004,
            pg(
                t + 0.004,
                pid,
                f"{user}@shop",
                "LOG",
                f"connection authorized: user={user} database=shop application_name={app}",
            ),
        )
        dur = rng.uniform(40, 900)
        if t + dur < 3600:
            m, s = divmod(dur, 60)
            db.add(
                t + dur,
                pg(
                    t + dur,
                    pid,
                    f"{user}@shop",
                    "LOG",
                    f"disconnection: session time: 0:{int(m):02d}:{s:06.3f} user={user} database=shop "
                    f"host={host} port={port}",
                ),
            )
    slow = [
        "SELECT p.id, p.name, sum(oi.qty) FROM products p JOIN order_items oi ON oi.product_id = p.id "
        "GROUP BY p.id ORDER BY 3 DESC LIMIT 50",
        "SELECT * FROM orders WHERE customer_id = $1 ORDER BY created_at DESC",
        "SELECT count(*) FROM sessions WHERE expires_at < now()",
        "SELECT id, name, price_cents FROM products "
        "WHERE to_tsvector('english', name) @@ plainto_tsquery($1)",
    ]
    for t in sorted(rng.uniform(10, 3590) for _ in range(22)):
        db.add(
            t,
            pg(
                t,
                rng.choice(web_pids),
                "app@shop",
                "LOG",
                f"duration: {rng.uniform(1000, 4200):.3f} ms  statement: {rng.choice(slow)}",
            ),
        )
    for t in sorted(rng.uniform(60, 3500) for _ in range(6)):
        if failing[0] - 60 < t < failing[1] + 60:
            continue
        table = rng.choice(["sessions", "cart_items", "orders", "email_log"])
        db.add(
            t,
            pg(
                t,
                rng.randint(32000, 33999),
                "",
                "LOG",
                f'automatic analyze of table "shop.public.{table}" system usage: CPU: user: '
                f"{rng.uniform(0.01, 0.2):.2f} s, system: 0.00 s, elapsed: {rng.uniform(0.1, 0.9):.2f} s",
            ),
        )
    # the backup (pg_dump to the same disk) that filled it up: it connects early, and dies when its
    # output can no longer be written
    db.add(
        301.7,
        pg(301.7, 30980, "[unknown]@[unknown]", "LOG", "connection received: host=127.0.0.1 port=51844"),
    )
    db.add(
        301.71,
        pg(
            301.71,
            30980,
            "backup@shop",
            "LOG",
            "connection authorized: user=backup database=shop application_name=pg_dump",
        ),
    )
    db.add(
        T_DISK_FULL,
        pg(
            T_DISK_FULL,
            1194,
            "",
            "LOG",
            'could not write temporary statistics file "pg_stat_tmp/global.tmp": No space left on device',
        ),
    )
    t = T_DISK_FULL + 41.2
    while t < T_FREED:
        db.add(
            t,
            pg(
                t,
                1194,
                "",
                "LOG",
                'could not write temporary statistics file "pg_stat_tmp/global.tmp": No space left on device',
            ),
        )
        t += rng.uniform(50, 110)
    db.add(
        T_DISK_FULL + 2.5,
        pg(T_DISK_FULL + 2.5, 30980, "backup@shop", "LOG", "could not send data to client: Broken pipe"),
    )
    db.add(
        T_DISK_FULL + 2.501,
        pg(T_DISK_FULL + 2.501, 30980, "backup@shop", "FATAL", "connection to client lost"),
    )
    db.add(
        38 * 60 + 41.2,
        pg(
            38 * 60 + 41.2,
            33410,
            "postgres@shop",
            "LOG",
            "connection authorized: user=postgres database=shop application_name=psql",
        ),
    )

    # ---------------------------------------------------------------- worker (python job runner)
    def wlog(t: float, level: str, logger: str, msg: str) -> None:
        worker.add(t, f"{DATE} {clock(t, sep=',')} {level:<7} [worker-01 pid=2214] {logger}: {msg}")

    times: list[tuple[float, str]] = [(T_WORKER_FAIL, "send_receipt")]
    t = 4.0
    while t < 3595:
        if not (T_DISK_FULL - 20 < t < T_WORKER_FAIL + 1 or T_FREED - 5 < t < T_REQUEUE + 5):
            times.append(
                (t, rng.choices(["send_receipt", "update_inventory", "sync_search_index"], [4, 3, 2])[0])
            )
        t += rng.expovariate(1 / 40.0)
    for k in range(12):  # expire_carts every five minutes, from a separate id range
        times.append((k * 300 + 150.0 + rng.uniform(0, 2), "expire_carts"))
    times.sort()
    job_id, cron_id, order_id = 88100, 90000, 55120
    queue: list[tuple[float, int, int, str, str, int]] = []
    for n, (t, kind) in enumerate(times):
        if kind == "expire_carts":
            cron_id += 1
            queue.append((t, n, cron_id, kind, "", 1))
            continue
        job_id += 1
        order_id += rng.randint(1, 3)
        arg = {
            "send_receipt": f"order_id={order_id}",
            "update_inventory": f"product_id={rng.randint(1000, 1099)}",
            "sync_search_index": f"batch={job_id % 997}",
        }[kind]
        queue.append((t, n, job_id, kind, arg, 1))
    heapq.heapify(queue)
    dead: list[tuple[int, str, str]] = []
    arrived: dict[int, float] = {jid: t for t, _, jid, *_ in queue}
    finished: dict[int, float] = {}
    seq = len(queue)
    streak, paused_until, probing, busy_until = 0, -1.0, False, -1.0
    breaker: list[tuple[float, str]] = [(0.0, "closed")]
    while queue:
        t, _, jid, kind, arg, attempt = heapq.heappop(queue)
        if t < max(paused_until, busy_until):  # breaker open, or the (single) worker is busy: hold the job
            seq += 1
            later = paused_until + rng.uniform(0.001, 0.3) if t < paused_until else busy_until + 0.002
            heapq.heappush(queue, (later, seq, jid, kind, arg, attempt))
            continue
        call = f"job {jid} {kind}({arg})"
        writes = kind != "sync_search_index"
        if writes and failing[0] <= t < failing[1]:
            rel = REL_FILES[kind]
            db_write_error(t - rng.uniform(0.01, 0.05), 30302, "worker@shop", rel, JOB_SQL[kind])
            err = f"psycopg2.errors.DiskFull: {disk_error(rel)}"
            if attempt < MAX_ATTEMPTS:
                delay = 30 * 2 ** (attempt - 1)
                wlog(
                    t,
                    "WARNING",
                    "worker.jobs",
                    f"{call} failed on attempt {attempt}/{MAX_ATTEMPTS}: {err}; retrying in {delay}s",
                )
                seq += 1
                heapq.heappush(queue, (t + delay + rng.uniform(0, 0.4), seq, jid, kind, arg, attempt + 1))
            else:
                wlog(
                    t,
                    "ERROR",
                    "worker.jobs",
                    f"{call} failed on attempt {attempt}/{MAX_ATTEMPTS}: {err}; "
                    "giving up, moved to dead-letter queue",
                )
                dead.append((jid, kind, arg))
                finished[jid] = t
            streak += 1
            if streak >= BREAKER_THRESHOLD or probing:
                paused_until = t + BREAKER_PAUSE
                breaker.append((t, "open"))
                why = "probe job failed" if probing else f"{streak} consecutive database errors"
                wlog(
                    t + 0.001,
                    "WARNING",
                    "worker.main",
                    f"circuit breaker open ({why}); pausing job consumption for {BREAKER_PAUSE}s",
                )
                probing = True
            continue
        dur = rng.uniform(0.05, 0.9) if writes else rng.uniform(0.8, 3.5)
        done = f"{call} succeeded in {dur:.2f}s"
        if attempt > 1:
            done = f"{call} succeeded on attempt {attempt} in {dur:.2f}s"
        if kind == "expire_carts":
            done += f", deleted {rng.randint(3, 40)} rows"
        wlog(t, "INFO", "worker.jobs", f"{call} started")
        wlog(t + dur, "INFO", "worker.jobs", done)
        finished[jid] = t + dur
        busy_until = t + dur + rng.uniform(0.003, 0.02)
        if writes:
            streak = 0
            if probing:
                probing = False
                breaker.append((t + dur, "closed"))
                wlog(
                    t + dur + 0.001,
                    "INFO",
                    "worker.main",
                    "circuit breaker closed: database writes succeed again",
                )
    wlog(
        T_REQUEUE,
        "INFO",
        "worker.admin",
        f"requeued {len(dead)} job{'s' if len(dead) != 1 else ''} from the dead-letter queue "
        "(requested by operator m.haddad)",
    )
    t = T_REQUEUE + 0.2
    for jid, kind, arg in dead:
        dur = rng.uniform(0.05, 0.6)
        wlog(t, "INFO", "worker.jobs", f"job {jid} {kind}({arg}) started")
        wlog(t + dur, "INFO", "worker.jobs", f"job {jid} {kind}({arg}) succeeded in {dur:.2f}s (requeued)")
        t += dur + rng.uniform(0.05, 0.3)
    dead_ids = {jid for jid, *_ in dead}
    for k in range(60):
        t = k * 60 + 0.004
        depth = sum(1 for j, a in arrived.items() if a <= t < finished[j])
        dl = sum(1 for j in dead_ids if finished[j] <= t) if t < T_REQUEUE else 0
        state = [s for when, s in breaker if when <= t][-1]
        wlog(t, "INFO", "worker.main", f"heartbeat queue_depth={depth} dead_letter={dl} circuit={state}")

    logs = {"web.log": web.render(), "db.log": db.render(), "worker.log": worker.render()}
    # sanity checks on the story
    for name, text in logs.items():
        n = text.count("\n")
        assert 150 <= n <= 400, (name, n)
    first = {}
    for name, text in logs.items():
        for line in text.splitlines():
            bad = (
                (" 500 " in line)
                if name == "web.log"
                else any(w in line for w in ("ERROR", "FATAL", "PANIC", "WARNING", "No space"))
            )
            if bad:
                first[name] = line
                break
    assert first["db.log"].startswith(f"{DATE} 14:23:07.318"), first["db.log"]
    assert "[21/May/2024:14:23:11 " in first["web.log"], first["web.log"]
    assert first["worker.log"].startswith(f"{DATE} 14:23:26,431"), first["worker.log"]

    def where(name: str, needle: str) -> tuple[str, str]:
        lines = logs[name].splitlines()
        idx = next(i for i, ln in enumerate(lines, start=1) if needle in ln)
        return f"line {idx}", lines[idx - 1]

    f1_loc, f1_line = where("db.log", "No space left on device")
    f2_loc, f2_line = where("web.log", "[21/May/2024:14:23:11 ")
    f3_loc, f3_line = where(
        "web.log", f'[21/May/2024:{clock(T_RECOVERED, ms=False)} +0000] "POST /api/orders'
    )
    f4_loc, f4_line = where("worker.log", "requeued")
    facts = [
        Fact(
            "logs/db.log",
            "What failed first in the incident?",
            "the database host's disk filled up: `No space left on device` at `14:23:07`",
            f1_line,
            f1_loc,
        ),
        Fact(
            "logs/web.log", "When did the web tier return its first 500 error?", "`14:23:11`", f2_line, f2_loc
        ),
        Fact(
            "logs/web.log",
            "When did orders start succeeding again?",
            f"`{clock(T_RECOVERED, ms=False)}`",
            f3_line,
            f3_loc,
        ),
        Fact(
            "logs/worker.log.gz",
            "How many failed worker jobs were requeued from the dead-letter queue?",
            f"`requeued {len(dead)} jobs`",
            f4_line,
            f4_loc,
        ),
    ]
    return logs, facts


def gzip_bytes(data: bytes) -> bytes:
    """gzip with a fixed header: no file name, mtime 0, maximum compression."""
    buf = io.BytesIO()
    with gzip.GzipFile(filename="", mode="wb", fileobj=buf, compresslevel=9, mtime=0) as gz:
        gz.write(data)
    return buf.getvalue()


# ============================================================================================ output


def facts_markdown(facts: list[Fact]) -> str:
    rows = [
        "# Sample documents: planted facts",
        "",
        "Generated by `scripts/make_sample_docs.py` (do not edit by hand; rerun the script).  Every",
        "`backticked` part of an answer occurs verbatim in the source.  Token positions are estimated as",
        "characters / 4.",
        "",
        "| # | Source | Question | Expected answer | Where |",
        "|---|--------|----------|-----------------|-------|",
    ]
    for i, f in enumerate(facts, start=1):
        rows.append(f"| {i} | {f.source} | {f.question} | {f.answer} | {f.location} |")
    return "\n".join(rows) + "\n"


def build() -> tuple[dict[str, bytes], list[Fact]]:
    """Every output file (relative path -> bytes) and the list of facts."""
    chronicle, c_facts = make_chronicle(random.Random(SEED))
    pdf, _pages, p_facts = make_report(random.Random(SEED + 1))
    logs, l_facts = make_logs(random.Random(SEED + 2))
    facts = c_facts + p_facts + l_facts
    files = {
        "harbor_chronicle.txt": chronicle.encode("utf-8"),
        "field_report.pdf": pdf,
        "logs/web.log": logs["web.log"].encode("utf-8"),
        "logs/db.log": logs["db.log"].encode("utf-8"),
        "logs/worker.log.gz": gzip_bytes(logs["worker.log"].encode("utf-8")),
        "FACTS.md": facts_markdown(facts).encode("utf-8"),
    }
    return files, facts


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out_dir", nargs="?", type=Path, default=DEFAULT_OUT, help="default: %(default)s")
    parser.add_argument("-q", "--quiet", action="store_true", help="do not print the facts")
    args = parser.parse_args(argv)
    files, facts = build()
    for rel, data in files.items():
        path = args.out_dir / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    if not args.quiet:
        for rel, data in files.items():
            print(f"{len(data):>8,}  {args.out_dir / rel}")
        print("\nFACTS")
        for f in facts:
            print(f"- {f.question}\n    -> {f.answer}\n    @ {f.source}: {f.location}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
