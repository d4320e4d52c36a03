"""Rebuild the Faker-derived reference lists of the test sets (run by hand, never at run time).

    pip install faker==40.63.0 && python src/datafirst/testsets/reference/build_reference.py

Writes us_forenames.csv, us_surnames.csv, us_places.csv, historical_forenames.csv,
historical_surnames.csv and historical_towns.csv beside this file. The historical lists join a
hand-written head (the names and towns common before 1920, with rough weights, from general
knowledge) to a tail taken from Faker's locale providers, which hold modern names: the tail
shares a fixed part of each list's weight. SOURCES.md says where every list comes from.
"""

from __future__ import annotations

import csv
import importlib
import random
from pathlib import Path

import faker

HERE = Path(__file__).resolve().parent
TAIL_SHARE = 0.2       # the Faker tail's share of a historical list's weight (the head has the rest)
TOWN_TAIL_SHARE = 0.4
US_CITIES = 400
SAMPLE_SEED = 20200401

# Per tradition: the Faker locales whose person and address providers give the tail.
LOCALES = {"english": ["en_GB"], "german": ["de_DE"], "french": ["fr_FR"], "italian": ["it_IT"], "dutch": ["nl_NL"],
           "scandinavian": ["sv_SE", "no_NO", "da_DK"], "polish": ["pl_PL"]}
TOWN_TAIL_SIZE = 100   # towns sampled from a locale's `cities` list (the lists run to 16,559)

# Hand-written heads: name weight, ... (forenames per sex, surnames, towns).
HEAD_FORENAMES = {
    ("english", "m"): "John 60 William 50 Thomas 40 James 35 George 25 Richard 20 Robert 20 Henry 18 Charles 15 "
                      "Edward 15 Joseph 14 Samuel 10 Francis 8 Benjamin 6 Daniel 6 Christopher 6 Nicholas 5 Matthew 5 "
                      "Anthony 4 Peter 4 Walter 4 Abraham 3 Isaac 3 Jonathan 3 Frederick 5 Alfred 4 Albert 4 Arthur 4",
    ("english", "f"): "Mary 60 Elizabeth 50 Ann 30 Anne 10 Sarah 30 Margaret 25 Jane 20 Catherine 15 Martha 12 "
                      "Hannah 12 Alice 10 Frances 8 Susanna 8 Eleanor 6 Dorothy 6 Rebecca 5 Emma 5 Harriet 5 "
                      "Charlotte 5 Ellen 6 Agnes 5 Isabella 5 Louisa 4 Rachel 4 Esther 4 Priscilla 2 Judith 3 Bridget 3",
    ("german", "m"): "Johann 80 Georg 35 Johannes 30 Friedrich 30 Wilhelm 30 Heinrich 30 Karl 25 Carl 10 Christian 20 "
                     "Jakob 15 Joseph 15 Josef 10 Peter 12 Michael 12 Andreas 10 Franz 15 Ludwig 10 August 10 "
                     "Philipp 10 Martin 8 Matthias 8 Konrad 6 Gottfried 6 Gottlieb 6 Hermann 8 Ernst 6 Otto 6 "
                     "Anton 8 Sebastian 4 Nikolaus 6 Valentin 3 Caspar 4 Balthasar 2 Melchior 2 Adam 5",
    ("german", "f"): "Anna 60 Maria 60 Catharina 30 Margaretha 25 Elisabeth 30 Barbara 15 Magdalena 15 Christina 15 "
                     "Dorothea 10 Sophia 10 Johanna 10 Regina 5 Eva 10 Susanna 5 Wilhelmine 6 Friederike 6 Louise 6 "
                     "Caroline 6 Katharina 10 Gertrud 6 Agnes 4 Ursula 4 Juliana 3 Rosina 5 Franziska 5 Theresia 6",
    ("french", "m"): "Jean 80 Pierre 40 Jacques 30 François 30 Louis 30 Joseph 20 Antoine 20 Nicolas 15 Charles 15 "
                     "Claude 15 Étienne 10 Michel 10 Guillaume 10 André 8 Henri 8 Philippe 6 Jean-Baptiste 12 "
                     "Martin 5 Denis 5 Mathieu 5 Paul 5 Gabriel 4 Simon 4",
    ("french", "f"): "Marie 80 Jeanne 40 Marguerite 25 Catherine 25 Anne 20 Françoise 20 Madeleine 12 Louise 12 "
                     "Élisabeth 10 Marie-Anne 8 Geneviève 8 Suzanne 8 Claudine 6 Antoinette 6 Marthe 5 Victoire 4 "
                     "Thérèse 6 Joséphine 4 Rose 4 Agathe 3",
    ("italian", "m"): "Giuseppe 60 Giovanni 60 Antonio 40 Francesco 40 Pietro 25 Domenico 20 Luigi 20 Carlo 15 "
                      "Angelo 15 Giacomo 12 Paolo 10 Vincenzo 15 Michele 12 Salvatore 12 Andrea 10 Lorenzo 8 "
                      "Bartolomeo 6 Matteo 6 Nicola 8 Filippo 6 Gaetano 6 Raffaele 6 Tommaso 5 Stefano 5 "
                      "Bernardo 4 Alessandro 5",
    ("italian", "f"): "Maria 80 Anna 25 Caterina 25 Teresa 20 Giovanna 15 Rosa 20 Angela 15 Francesca 15 "
                      "Margherita 12 Lucia 12 Elisabetta 10 Antonia 10 Domenica 8 Giuseppa 10 Maddalena 8 Orsola 4 "
                      "Agnese 4 Chiara 4 Carolina 5 Luigia 5",
    ("dutch", "m"): "Jan 70 Pieter 40 Cornelis 30 Hendrik 30 Willem 25 Johannes 30 Jacob 20 Dirk 15 Gerrit 15 "
                    "Adriaan 12 Arie 10 Klaas 12 Nicolaas 6 Teunis 6 Hendrikus 8 Jacobus 10 Gijsbert 5 Frederik 5 "
                    "Abraham 5 Huibert 4 Maarten 6 Lambertus 4 Aart 4 Evert 5",
    ("dutch", "f"): "Maria 40 Johanna 35 Anna 25 Cornelia 20 Neeltje 15 Grietje 12 Geertruida 10 Hendrika 10 "
                    "Adriana 10 Jacoba 10 Elisabeth 12 Catharina 15 Margaretha 10 Aaltje 8 Trijntje 6 Wilhelmina 8 "
                    "Petronella 8 Aagje 4 Dirkje 4",
    ("scandinavian", "m"): "Anders 40 Johan 40 Lars 35 Carl 25 Erik 30 Nils 30 Per 25 Olof 20 Jöns 6 Hans 20 "
                           "Peder 15 Jens 20 Niels 15 Ole 15 Søren 10 Christen 5 Gustaf 15 Sven 15 Magnus 8 Jonas 10 "
                           "Knut 8 Halvor 5 Ivar 5 Mikkel 5 Rasmus 8",
    ("scandinavian", "f"): "Anna 40 Maria 35 Kerstin 20 Karin 20 Brita 15 Ingrid 15 Margareta 15 Kirsten 15 "
                           "Maren 15 Karen 20 Ane 10 Else 10 Johanna 10 Christina 15 Elin 10 Sigrid 8 Ingeborg 10 "
                           "Gertrud 6 Helena 8 Sofia 6 Mette 6 Kari 8 Gunhild 5 Margrethe 6",
    ("polish", "m"): "Jan 60 Józef 40 Stanisław 35 Antoni 25 Franciszek 25 Wojciech 20 Andrzej 15 Tomasz 12 "
                     "Jakub 15 Piotr 15 Michał 15 Kazimierz 15 Maciej 10 Marcin 10 Paweł 10 Walenty 6 Ignacy 6 "
                     "Szymon 6 Władysław 12 Mateusz 8 Bartłomiej 5 Wawrzyniec 4 Aleksander 5",
    ("polish", "f"): "Maria 60 Katarzyna 30 Anna 30 Agnieszka 15 Marianna 25 Zofia 20 Jadwiga 15 Józefa 15 "
                     "Barbara 12 Franciszka 12 Małgorzata 15 Magdalena 10 Ewa 8 Helena 10 Rozalia 8 Elżbieta 12 "
                     "Apolonia 5 Teresa 6 Antonina 8 Julianna 5 Wiktoria 5",
}
HEAD_SURNAMES = {
    "english": "Smith 60 Jones 30 Taylor 25 Brown 25 Williams 20 Wilson 15 Johnson 15 Wright 15 Walker 12 "
               "Robinson 12 Thompson 12 White 12 Hughes 10 Edwards 10 Green 10 Hall 10 Wood 10 Harris 10 Clarke 8 "
               "Jackson 8 Turner 8 Hill 8 Cooper 8 Baker 8 Ward 6 Morris 6 Moore 6 King 6 Lewis 6 Carter 5 Shaw 5 "
               "Fletcher 4",
    "german": "Müller 60 Schmidt 45 Schneider 30 Fischer 28 Weber 25 Meyer 25 Wagner 22 Becker 20 Schulz 18 "
              "Hoffmann 18 Schäfer 15 Koch 15 Bauer 15 Richter 12 Klein 12 Wolf 12 Schröder 10 Neumann 10 "
              "Schwarz 10 Zimmermann 10 Braun 10 Krüger 8 Hofmann 8 Hartmann 8 Lange 8 Schmitt 8 Werner 8 "
              "Krause 8 Meier 6 Lehmann 6 Schmid 6 Keller 5 Vogel 5 Huber 5",
    "french": "Martin 40 Bernard 25 Dubois 20 Thomas 20 Robert 18 Richard 15 Petit 15 Durand 15 Leroy 12 Moreau 12 "
              "Simon 12 Laurent 10 Lefebvre 10 Michel 10 Garnier 8 Fournier 8 Girard 8 Roux 8 Morel 8 Lambert 6 "
              "Bonnet 6 Fontaine 6 Rousseau 6 Blanc 6 Guerin 6 Mercier 5 Chevalier 5",
    "italian": "Rossi 40 Russo 30 Ferrari 25 Esposito 25 Bianchi 20 Romano 18 Colombo 18 Ricci 15 Marino 15 "
               "Greco 15 Bruno 12 Gallo 12 Conti 12 De_Luca 10 Costa 10 Giordano 10 Mancini 10 Rizzo 10 "
               "Lombardi 8 Moretti 8 Barbieri 6 Fontana 6 Santoro 6 Mariani 5 Rinaldi 5 Caruso 5 Ferrara 5",
    "dutch": "de_Jong 35 Jansen 30 de_Vries 30 van_den_Berg 20 van_Dijk 20 Bakker 20 Janssen 20 Visser 18 Smit 18 "
             "Meijer 15 de_Boer 15 Mulder 15 de_Groot 12 Bos 12 Vos 12 Peters 10 Hendriks 10 van_Leeuwen 8 "
             "Dekker 8 Brouwer 8 de_Wit 8 Dijkstra 8 Smits 6 de_Graaf 6 van_der_Meer 6 Kok 5 Jacobs 5 Vermeulen 5",
    "scandinavian": "Andersson 30 Johansson 30 Karlsson 25 Nilsson 25 Eriksson 20 Larsson 20 Olsson 18 Persson 18 "
                    "Jensen 25 Nielsen 25 Hansen 25 Pedersen 20 Andersen 18 Christensen 12 Larsen 15 Sørensen 12 "
                    "Rasmussen 10 Olsen 15 Johansen 12 Berg 8 Haugen 6 Lund 6 Dahl 6 Lindberg 5 Lindqvist 5 "
                    "Berglund 5",
    "polish": "Nowak 40 Kowalski 30 Wiśniewski 25 Wójcik 20 Kowalczyk 20 Kamiński 18 Lewandowski 18 Zieliński 15 "
              "Szymański 15 Woźniak 15 Dąbrowski 12 Kozłowski 12 Jankowski 10 Mazur 10 Kwiatkowski 10 Krawczyk 10 "
              "Piotrowski 8 Grabowski 8 Nowakowski 8 Pawłowski 8 Michalski 6 Wróbel 6 Król 6 Zając 6 Wieczorek 5 "
              "Jabłoński 5",
}
HEAD_TOWNS = {
    "english": "London 40 Bristol 12 Norwich 10 York 10 Liverpool 10 Manchester 10 Birmingham 8 Leeds 6 Exeter 6 "
               "Coventry 5 Sheffield 5 Nottingham 5 Leicester 4 Hull 4 Plymouth 4 Ipswich 3 Colchester 3 "
               "Canterbury 3 Chester 3 Shrewsbury 3 Worcester 3 Gloucester 3 Oxford 3 Cambridge 3 Bath 2 "
               "Salisbury 2 Lincoln 2 Durham 2 Carlisle 2 Lancaster 2 Reading 2 Northampton 2 Derby 2 Stafford 2 "
               "Kendal 1 Whitby 1 Hereford 1 Ludlow 1 Barnstaple 1 Tiverton 1",
    "german": "Berlin 20 Hamburg 15 München 12 Köln 12 Frankfurt 10 Leipzig 10 Dresden 10 Nürnberg 8 Breslau 8 "
              "Königsberg 8 Stuttgart 6 Hannover 6 Bremen 6 Augsburg 5 Mainz 5 Trier 4 Aachen 4 Kassel 4 Erfurt 4 "
              "Magdeburg 4 Lübeck 4 Würzburg 4 Regensburg 3 Ulm 3 Heidelberg 3 Freiburg 3 Göttingen 2 Bamberg 2",
    "french": "Paris 30 Lyon 12 Marseille 10 Bordeaux 8 Rouen 8 Nantes 6 Lille 6 Toulouse 6 Strasbourg 6 Orléans 4 "
              "Reims 4 Amiens 4 Nancy 3 Metz 3 Dijon 3 Tours 3 Grenoble 3 Nîmes 2 Montpellier 2 Rennes 2 Caen 2 "
              "Besançon 2 Limoges 2 Angers 2 Troyes 2 Poitiers 2 Avignon 2 Brest 2 Le_Havre 2 Saint-Étienne 2",
    "italian": "Napoli 20 Roma 15 Milano 12 Torino 10 Venezia 10 Palermo 10 Genova 8 Firenze 8 Bologna 6 "
               "Messina 5 Catania 5 Bari 4 Verona 4 Padova 4 Brescia 3 Bergamo 3 Livorno 3 Ferrara 3 Modena 3 "
               "Parma 3 Lucca 2 Pisa 2 Siena 2 Perugia 2 Ancona 2",
    "dutch": "Amsterdam 25 Rotterdam 12 Den_Haag 10 Utrecht 8 Leiden 8 Haarlem 8 Groningen 6 Dordrecht 5 Delft 5 "
             "Middelburg 4 Zwolle 4 Leeuwarden 4 Nijmegen 4 Arnhem 4 Deventer 3 Alkmaar 3 Gouda 3 Breda 3 "
             "Maastricht 3 Hoorn 2 Enkhuizen 2 Kampen 2",
    "scandinavian": "Stockholm 20 København 20 Christiania 10 Göteborg 10 Bergen 8 Malmö 6 Uppsala 5 Odense 6 "
                    "Aarhus 6 Trondheim 5 Aalborg 4 Helsingør 3 Norrköping 3 Karlskrona 3 Gävle 3 Stavanger 3 "
                    "Drammen 2 Kristiansand 2 Ribe 2 Visby 2 Lund 2 Kalmar 2",
    "polish": "Warszawa 20 Kraków 15 Poznań 10 Lwów 10 Wilno 8 Gdańsk 8 Lublin 6 Łódź 6 Wrocław 6 Płock 4 "
              "Kalisz 4 Toruń 4 Tarnów 3 Radom 3 Częstochowa 3 Sandomierz 2 Przemyśl 2 Zamość 2 Łomża 2 "
              "Siedlce 2 Kielce 2",
}


def _provider(kind: str, locale: str):
    return importlib.import_module(f"faker.providers.{kind}.{locale}").Provider


def _head(text: str) -> dict[str, float]:
    words = text.split()
    return {name.replace("_", " "): float(w) for name, w in zip(words[::2], words[1::2])}


def _with_tail(head: dict[str, float], tail: list[str], share: float) -> list[tuple[str, float, str]]:
    """Head names at their weights, then the tail's new names sharing `share` of the total."""
    new = list(dict.fromkeys(n for n in tail if n not in head))
    each = sum(head.values()) * share / (1 - share) / max(len(new), 1)
    return [(n, w, "hand") for n, w in head.items()] + [(n, round(each, 5), "faker") for n in new]


def _write(name: str, header: list[str], rows: list) -> None:
    with open(HERE / name, "w", newline="", encoding="utf-8") as f:
        out = csv.writer(f, lineterminator="\n")
        out.writerow(header)
        out.writerows(rows)
    print(f"{name}: {len(rows)} rows")


def _surname_tail(locale: str) -> list[str]:
    person = _provider("person", locale)
    names = getattr(person, "male_last_names", None) or person.last_names  # pl_PL: male forms apart
    return list(names)


def main() -> None:
    us = _provider("person", "en_US")
    _write("us_forenames.csv", ["name", "sex", "weight"],
           [(n, sex, w) for sex, names in (("M", us.first_names_male), ("F", us.first_names_female))
            for n, w in names.items()])
    _write("us_surnames.csv", ["name", "weight"], list(us.last_names.items()))

    # Cities: Faker's en_US city() (made-up names such as "Lake Jessicaville") in states drawn
    # uniformly, each with one ZIP inside its state's range; weights Zipf by a seeded order.
    fake = faker.Faker("en_US")
    fake.seed_instance(SAMPLE_SEED)
    ranges = _provider("address", "en_US").states_postcode
    states = [s for s in _provider("address", "en_US").states_abbr if s in ranges]
    cities: dict[tuple[str, str], int] = {}
    while len(cities) < US_CITIES:
        state = fake.random_element(states)
        lo, hi = ranges[state]
        cities.setdefault((fake.city(), state), fake.random_int(lo, hi - 10))
    _write("us_places.csv", ["city", "state", "zip", "weight"],
           [(c, s, f"{z:05d}", round(1 / rank, 5)) for rank, ((c, s), z) in enumerate(cities.items(), start=1)])

    fore, sur, towns = [], [], []
    rng = random.Random(SAMPLE_SEED)
    for tradition, locales in LOCALES.items():
        for sex in ("m", "f"):
            tail = [n for loc in locales
                    for n in getattr(_provider("person", loc), f"first_names_{'male' if sex == 'm' else 'female'}")]
            fore += [(tradition, n, sex, w, o) for n, w, o in _with_tail(_head(HEAD_FORENAMES[tradition, sex]), tail,
                                                                          TAIL_SHARE)]
        tail = [n for loc in locales for n in _surname_tail(loc)]
        sur += [(tradition, n, w, o) for n, w, o in _with_tail(_head(HEAD_SURNAMES[tradition]), tail, TAIL_SHARE)]
        tail = []
        for loc in locales:
            listed = sorted(set(getattr(_provider("address", loc), "cities", ())))  # it_IT builds its list from a set
            tail += rng.sample(listed, min(TOWN_TAIL_SIZE, len(listed)))
        towns += [(tradition, n, w, o) for n, w, o in _with_tail(_head(HEAD_TOWNS[tradition]), tail, TOWN_TAIL_SHARE)]
    _write("historical_forenames.csv", ["tradition", "name", "sex", "weight", "origin"], fore)
    _write("historical_surnames.csv", ["tradition", "name", "weight", "origin"], sur)
    _write("historical_towns.csv", ["tradition", "town", "weight", "origin"], towns)
    print(f"Faker {faker.VERSION}")


if __name__ == "__main__":
    main()
