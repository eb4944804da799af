#!/usr/bin/env bash
# the remaining commands of issue 2's "Done when", each under /usr/bin/time -v
# Run after `infini read ../shared/corpus/books/war_and_peace.txt -o runs/wp.mem` (16:38 here).
cd "$(dirname "$0")/.."; mkdir -p runs
run() { local name=$1; shift; /usr/bin/time -v "$@" > runs/$name.out 2> runs/$name.err; echo "== $name rc=$?"; }
run pdf infini ask sample_docs/field_report.pdf "Which turbine showed a cracked blade root?" --no-cache
run logs infini summarize sample_docs/logs/ --no-cache
/usr/bin/time -v bash -c 'cat sample_docs/logs/db.log | infini ask "What failed first?" --no-cache' > runs/stdin.out 2> runs/stdin.err; echo "== stdin rc=$?"
run wpask infini ask runs/wp.mem "Who is Pierre's father?"
run wpask2 infini ask runs/wp.mem "Who is Natasha Rostova's brother?"
head -c 42000 ../shared/corpus/books/war_and_peace.txt | iconv -f cp1252 -t utf-8 > runs/wp10k.txt
run read10k infini read runs/wp10k.txt -o runs/wp10k.mem --no-cache
run pdfagain infini ask sample_docs/field_report.pdf "Who led the wind-farm inspection?"
