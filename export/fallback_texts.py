"""Built-in validation text for machines without the shared data: varied, real-language passages.

Used only when no SciFact corpus is found and no ``--validation-texts`` file is given, so an export
still validates against the PyTorch reference. Passages range from one line to several hundred
tokens (some are cut at the usual 256-token limit); queries are short claims about them.
"""

from __future__ import annotations

PASSAGES: tuple[str, ...] = (
    "Regular aerobic exercise lowers resting blood pressure in adults with mild hypertension.",
    "The mitochondrion produces most of the chemical energy needed to power a cell's reactions.",
    "Vaccination campaigns reduced measles deaths worldwide by more than seventy percent between "
    "2000 and 2015, although coverage gaps left outbreaks in several regions.",
    "A randomized trial compared two antibiotics for community-acquired pneumonia in children and "
    "found no difference in treatment failure at fourteen days.",
    "Sleep deprivation impairs working memory, slows reaction times and increases the number of "
    "lapses of attention in simple vigilance tasks.",
    "Insulin resistance precedes the onset of type 2 diabetes by many years and is strongly "
    "associated with abdominal obesity and physical inactivity.",
    "The gut microbiome of infants born by caesarean section differs from that of vaginally "
    "delivered infants during the first months of life.",
    "CRISPR-Cas9 allows targeted editing of genomic DNA by guiding a nuclease to a sequence "
    "complementary to a short RNA.",
    "Photosynthesis converts light energy into chemical energy stored in sugars.",
    "Air pollution from fine particulate matter is linked to higher rates of cardiovascular and "
    "respiratory disease in large cohort studies across Europe, Asia and North America.",
    "Antibiotic resistance spreads between bacteria through plasmids carrying resistance genes.",
    "Telomeres shorten with every cell division, and critically short telomeres trigger "
    "senescence or apoptosis.",
    "The hippocampus is essential for forming new declarative memories but not for retrieving "
    "remote ones.",
    "Statin therapy reduced major vascular events by about one fifth per millimole per litre "
    "reduction in LDL cholesterol in a meta-analysis of individual participant data.",
    "Malaria parasites develop resistance to artemisinin through mutations in the kelch13 gene.",
    "Chronic stress elevates cortisol, which over time can suppress immune responses.",
    "A vector index answers nearest-neighbour queries over embeddings in sublinear time.",
    "The train was delayed for forty minutes because of a signal failure near the station.",
    "Our quarterly revenue grew by twelve percent, driven mostly by subscriptions in Europe.",
    "Please restart the router and wait two minutes before trying to connect again.",
    "The recipe calls for two cups of flour, one egg and a pinch of salt.",
    "Wind turbines convert the kinetic energy of moving air into electricity.",
    "The committee postponed its decision until the independent audit is complete.",
    "Children who read for pleasure score higher on vocabulary tests in adolescence.",
    "Ocean acidification reduces the ability of corals and shellfish to build calcium carbonate "
    "skeletons.",
    "Dopamine neurons signal the difference between expected and received reward.",
    "Mutations in BRCA1 and BRCA2 raise the lifetime risk of breast and ovarian cancer.",
    "Zinc supplementation shortens the duration of diarrhoea in children in low-income countries.",
    "Hand hygiene compliance among hospital staff rose after feedback on infection rates.",
    "Gene expression profiling separated the tumours into three subtypes with different survival.",
    "Obesity during pregnancy is associated with an increased risk of gestational diabetes, "
    "pre-eclampsia and caesarean delivery, and with higher birth weight of the infant.",
    "Microglia prune synapses during development and respond to injury in the adult brain.",
    "Background: Physical activity is widely recommended for the prevention of chronic disease, "
    "yet the dose needed for measurable benefit remains debated. Methods: We followed 12,000 "
    "adults aged 40 to 75 for a median of nine years and recorded self-reported weekly activity, "
    "blood pressure, lipid profiles, fasting glucose and incident cardiovascular events. Models "
    "were adjusted for age, sex, smoking, education, diet quality and baseline body mass index. "
    "Results: Compared with inactive participants, those reporting 150 minutes or more of "
    "moderate activity per week had a 23 percent lower risk of cardiovascular events, and the "
    "association was present in both men and women. Benefits appeared at lower doses as well: "
    "even 60 minutes per week was associated with an 11 percent lower risk. The relation was "
    "partly explained by lower blood pressure and better glucose control, but a substantial part "
    "remained after adjustment for these mediators. Sensitivity analyses excluding events in "
    "the first two years gave similar estimates, arguing against reverse causation. Conclusions: "
    "Moderate physical activity, even below current recommendations, is associated with fewer "
    "cardiovascular events in middle-aged and older adults; public health messages may "
    "emphasise that some activity is better than none.",
    "Introduction: Antimicrobial resistance threatens the effectiveness of common treatments for "
    "bacterial infections, and surveillance in primary care is limited. We describe resistance "
    "patterns in urinary isolates collected from general practices over five years. Methods: "
    "Laboratory records of 85,000 urine cultures were linked to prescribing data. Resistance to "
    "trimethoprim, nitrofurantoin, amoxicillin and ciprofloxacin was estimated per year and per "
    "practice, and associations with prior prescribing were tested with multilevel models. "
    "Results: Escherichia coli accounted for 78 percent of positive cultures. Resistance to "
    "trimethoprim fell from 34 to 27 percent after national guidance recommended nitrofurantoin "
    "as first-line treatment, while nitrofurantoin resistance stayed below 3 percent. Practices "
    "with higher ciprofloxacin prescribing had more ciprofloxacin-resistant isolates, and a "
    "patient's own antibiotic use in the previous three months was the strongest individual "
    "predictor of a resistant infection. Discussion: Prescribing guidance can shift resistance "
    "within a few years at population level. Individual prescribing history should inform "
    "empirical treatment choices, and continued surveillance is needed to detect emerging "
    "resistance to first-line agents before it compromises care.",
    "The development of the mammalian cerebral cortex depends on the orderly proliferation of "
    "neural progenitor cells, the migration of newborn neurons to their final positions and the "
    "formation of precise synaptic connections. Radial glial cells serve both as progenitors and "
    "as scaffolds along which neurons migrate from the ventricular zone towards the pial surface. "
    "Disruption of any of these steps can lead to malformations such as lissencephaly, in which "
    "the cortex lacks its normal folds, or periventricular heterotopia, in which neurons fail to "
    "leave the ventricular zone. Genetic studies in families with these conditions have "
    "identified genes encoding microtubule-associated proteins, actin-binding proteins and "
    "components of signalling pathways that control cell polarity. Animal models show that the "
    "timing of progenitor divisions determines how many neurons are produced for each cortical "
    "layer, and that extrinsic signals from the meninges and thalamic axons refine the identity "
    "of cortical areas. Advances in single-cell sequencing now allow the lineage of individual "
    "progenitors to be traced, revealing greater diversity among radial glial cells than was "
    "previously recognised, including outer radial glia that are abundant in primates and may "
    "underlie the expansion of the human neocortex during evolution. Understanding these "
    "mechanisms helps explain neurodevelopmental disorders and may guide future therapies.",
    "Search systems often combine a fast first stage with a slower, more accurate second stage. "
    "The first stage encodes queries and documents independently into vectors, so documents can "
    "be embedded once and searched with an approximate nearest-neighbour index. The second stage "
    "reads the query and each candidate document together and scores their relevance, which is "
    "more accurate but too expensive to apply to a whole collection. The number of candidates "
    "passed from the first to the second stage trades latency against quality.",
    "Short text.",
    "",
    "Numbers and symbols: 3.14159, 2.71828, 42 percent, $19.99, 5 km/h, 37.5 °C, H2O, CO2.",
    "Mixed language: la cellule souche, die Zelle, la célula, 细胞, клетка.",
)

QUERIES: tuple[str, ...] = (
    "exercise lowers blood pressure",
    "what do mitochondria do",
    "measles vaccination reduced deaths",
    "sleep loss and memory",
    "causes of type 2 diabetes",
    "gene editing with CRISPR",
    "statins prevent heart attacks",
    "how antibiotic resistance spreads",
    "cortisol and the immune system",
    "BRCA mutations and cancer risk",
    "physical activity and cardiovascular events",
    "urinary tract infection resistance trends",
    "cortical development and neuronal migration",
    "two-stage retrieval with a reranker",
    "ocean acidification harms corals",
    "why was the train late",
)
