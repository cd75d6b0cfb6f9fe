#!/usr/bin/env bash
# make-prompts.sh — generates ccedge's built-in IVR prompts (edge/prompts/<lang>/<key>.wav),
# one set per built-in language: en (voice en-us) and es (voice es).
#
# Needs: bash, espeak-ng (1.51 was used), sox (14.4), awk, bc.
#   Debian/Ubuntu: apt-get install -y espeak-ng sox bc
#
# Usage: deploy/prompts/make-prompts.sh [OUT_DIR]     (default: edge/prompts next to deploy/)
#        writes OUT_DIR/en/*.wav and OUT_DIR/es/*.wav
#
# Each prompt is spoken by espeak-ng (the language's voice, 165 words/min, UTF-8 text), then
# sox:
#   1. trims leading and trailing silence (below -50 dBFS),
#   2. removes rumble (high-pass 100 Hz) and resamples to 8 kHz (sox's very-high-quality rate),
#   3. levels it: peak to -6 dBFS, a fast look-ahead compressor above -20 dBFS to tame the
#      synthetic voice's transients, then one gain that brings the RMS to -16 dBFS unless
#      that would push the peak above -3 dBFS (speech lands between about -16 and -19 dBFS RMS,
#      peak exactly -3 dBFS),
#   4. appends a short fixed pause (PAUSE_WORD after a single key/digit, PAUSE_SENTENCE after
#      a sentence) so that prompts played back to back sound like natural speech,
#   5. writes 8 kHz mono 8-bit G.711 mu-law WAV (half the size of 16-bit PCM; the telephone
#      path is G.711 anyway), without dither and without comments.
#
# The output is deterministic: running the script twice gives byte-identical files
# (espeak-ng is deterministic, sox runs with -R and -D). The script is idempotent: it
# rewrites every file in OUT_DIR that it owns and touches nothing else.
#
# Each language's table below must list every key of `PromptKey::ALL` in
# edge/src/media/prompts.rs (the build fails when a file is missing). `language_offer` is
# followed on the line by the spoken key of that language (`PromptSet::expand`): "For
# English, press" + "star", "Para español, oprima" + "nueve".
set -euo pipefail
export LC_ALL=C

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
OUT="${1:-$HERE/../../edge/prompts}"
VOICE=""
SPEED=165
PAUSE_WORD=0.12
PAUSE_SENTENCE=0.22

for tool in espeak-ng sox awk bc; do
  command -v "$tool" >/dev/null || { echo "make-prompts: $tool is required" >&2; exit 1; }
done

WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT

# "RMS_dB PEAK_dB" of a file.
levels() {
  sox "$1" -n stats 2>&1 | awk '/RMS lev dB/{r=$4} /Pk lev dB/{p=$4} END{print r, p}'
}

# make KEY PAUSE TEXT   (into $DIR, spoken with $VOICE)
make() {
  local key="$1" pause="$2" text="$3"
  local raw="$WORK/$key.raw.wav" mid="$WORK/$key.mid.wav" lev="$WORK/$key.lev.wav"
  espeak-ng -b 1 -v "$VOICE" -s "$SPEED" -w "$raw" "$text"
  sox -R -D "$raw" -b 16 "$mid" \
    silence 1 0.01 -50d reverse silence 1 0.01 -50d reverse \
    highpass 100 rate -v 8000 \
    gain -n -6 compand 0.0005,0.03 3:-20,-20,0,-14 0 -90 0.001
  local rms pk gain
  read -r rms pk < <(levels "$mid")
  gain="$(echo "a = -16 - ($rms); b = -3 - ($pk); if (a < b) a else b" | bc -l)"
  sox -R -D "$mid" -b 16 "$lev" gain "$gain"
  sox -R -D "$lev" --comment "" -r 8000 -c 1 -e mu-law -b 8 "$DIR/$key.wav" pad 0 "$pause"
  printf '%-33s %6.2f s  rms %6s dBFS  peak %6s dBFS  "%s"\n' \
    "$LANG_DIR/$key.wav" "$(soxi -D "$DIR/$key.wav")" $(levels "$lev") "$text"
}

S="$PAUSE_SENTENCE"
W="$PAUSE_WORD"

# lang VOICE DIR: the following `make` lines speak with VOICE into OUT/DIR.
lang() {
  VOICE="$1" LANG_DIR="$2" DIR="$OUT/$2"
  mkdir -p "$DIR"
}

lang en-us en
make greeting                 "$S" "Thank you for calling."
make menu_callback            "$S" "Press 1 to be called back."
make menu_repeat              "$S" "Press 2 to hear this message again."
make menu_agent               "$S" "Press 0 to speak to an agent."
make callback_confirm_intro   "$S" "We will call you back at the number ending in"
make digit_0                  "$W" "zero"
make digit_1                  "$W" "one"
make digit_2                  "$W" "two"
make digit_3                  "$W" "three"
make digit_4                  "$W" "four"
make digit_5                  "$W" "five"
make digit_6                  "$W" "six"
make digit_7                  "$W" "seven"
make digit_8                  "$W" "eight"
make digit_9                  "$W" "nine"
make star                     "$W" "star"
make hash                     "$W" "hash"
make key_a                    "$W" "A"
make key_b                    "$W" "B"
make key_c                    "$W" "C"
make key_d                    "$W" "D"
make callback_confirm_choices "$S" "Press 1 to confirm, or 2 to enter a different number."
make enter_number             "$S" "Please enter the number we should call, followed by the hash key."
make invalid_number           "$S" "Sorry, that number is not valid."
make invalid_choice           "$S" "Sorry, that is not a valid choice."
make no_input                 "$S" "Sorry, we did not receive your choice."
make please_wait              "$S" "Please wait."
make booked                   "$S" "Your call back is booked."
make you_are_number           "$W" "You are number"
make in_the_queue             "$S" "in the queue."
make already_booked           "$S" "You already have a call back booked."
make queue_full               "$S" "Sorry, we cannot take more call back requests now."
make could_not_book           "$S" "Sorry, we could not book your call back."
make transferring             "$S" "Transferring you to an agent."
make transfer_failed          "$S" "Sorry, the transfer failed."
make goodbye                  "$S" "Thank you. Goodbye."
# Callback windows: "When should we call you back? For as soon as possible, press 1. For
# this evening, between 6 and 8, press 2." Times are spoken on a 12-hour clock from the
# digit prompts above and the number words below ("5 30", "8 oh 5").
make window_question          "$S" "When should we call you back?"
make window_for               "$W" "For"
make window_press             "$W" "press"
make window_asap              "$W" "as soon as possible,"
make window_when_open         "$W" "when we open,"
make window_at                "$W" "at"
make window_between           "$W" "between"
make window_and               "$W" "and"
make day_today                "$W" "today"
make day_tomorrow             "$W" "tomorrow"
make day_monday               "$W" "Monday"
make day_tuesday              "$W" "Tuesday"
make day_wednesday            "$W" "Wednesday"
make day_thursday             "$W" "Thursday"
make day_friday               "$W" "Friday"
make day_saturday             "$W" "Saturday"
make day_sunday               "$W" "Sunday"
make part_this_morning        "$W" "this morning,"
make part_this_afternoon      "$W" "this afternoon,"
make part_this_evening        "$W" "this evening,"
make part_morning             "$W" "morning,"
make part_afternoon           "$W" "afternoon,"
make part_evening             "$W" "evening,"
make number_oh                "$W" "oh"
make number_10                "$W" "ten"
make number_11                "$W" "eleven"
make number_12                "$W" "twelve"
make number_13                "$W" "thirteen"
make number_14                "$W" "fourteen"
make number_15                "$W" "fifteen"
make number_16                "$W" "sixteen"
make number_17                "$W" "seventeen"
make number_18                "$W" "eighteen"
make number_19                "$W" "nineteen"
make number_20                "$W" "twenty"
make number_30                "$W" "thirty"
make number_40                "$W" "forty"
make number_50                "$W" "fifty"
make language_offer           "$W" "For English, press"

lang es es
make greeting                 "$S" "Gracias por llamar."
make menu_callback            "$S" "Oprima 1 para que le devolvamos la llamada."
make menu_repeat              "$S" "Oprima 2 para escuchar este mensaje de nuevo."
make menu_agent               "$S" "Oprima 0 para hablar con un agente."
make callback_confirm_intro   "$S" "Le devolveremos la llamada al número que termina en"
make digit_0                  "$W" "cero"
make digit_1                  "$W" "uno"
make digit_2                  "$W" "dos"
make digit_3                  "$W" "tres"
make digit_4                  "$W" "cuatro"
make digit_5                  "$W" "cinco"
make digit_6                  "$W" "seis"
make digit_7                  "$W" "siete"
make digit_8                  "$W" "ocho"
make digit_9                  "$W" "nueve"
make star                     "$W" "asterisco"
make hash                     "$W" "numeral"
make key_a                    "$W" "A"
make key_b                    "$W" "B"
make key_c                    "$W" "C"
make key_d                    "$W" "D"
make callback_confirm_choices "$S" "Oprima 1 para confirmar, o 2 para ingresar otro número."
make enter_number             "$S" "Ingrese el número al que debemos llamar, seguido de la tecla numeral."
make invalid_number           "$S" "Lo sentimos, ese número no es válido."
make invalid_choice           "$S" "Lo sentimos, esa opción no es válida."
make no_input                 "$S" "Lo sentimos, no recibimos su opción."
make please_wait              "$S" "Por favor, espere."
make booked                   "$S" "Su devolución de llamada está reservada."
make you_are_number           "$W" "Usted es el número"
make in_the_queue             "$S" "en la fila."
make already_booked           "$S" "Ya tiene una devolución de llamada reservada."
make queue_full               "$S" "Lo sentimos, ahora no podemos aceptar más solicitudes de devolución de llamada."
make could_not_book           "$S" "Lo sentimos, no pudimos reservar su devolución de llamada."
make transferring             "$S" "Le transferimos a un agente."
make transfer_failed          "$S" "Lo sentimos, la transferencia falló."
make goodbye                  "$S" "Gracias. Adiós."
make language_offer           "$W" "Para español, oprima"
# Callback windows in Spanish ("Para mañana por la mañana, entre las 8 y las 12, oprima 3").
make window_question          "$S" "¿Cuándo quiere que le devolvamos la llamada?"
make window_for               "$W" "Para"
make window_press             "$W" "oprima"
make window_asap              "$W" "lo antes posible,"
make window_when_open         "$W" "cuando abramos,"
make window_at                "$W" "a las"
make window_between           "$W" "entre las"
make window_and               "$W" "y las"
make day_today                "$W" "hoy"
make day_tomorrow             "$W" "mañana"
make day_monday               "$W" "el lunes"
make day_tuesday              "$W" "el martes"
make day_wednesday            "$W" "el miércoles"
make day_thursday             "$W" "el jueves"
make day_friday               "$W" "el viernes"
make day_saturday             "$W" "el sábado"
make day_sunday               "$W" "el domingo"
make part_this_morning        "$W" "esta mañana,"
make part_this_afternoon      "$W" "esta tarde,"
make part_this_evening        "$W" "esta noche,"
make part_morning             "$W" "por la mañana,"
make part_afternoon           "$W" "por la tarde,"
make part_evening             "$W" "por la noche,"
make number_oh                "$W" "y"
make number_10                "$W" "diez"
make number_11                "$W" "once"
make number_12                "$W" "doce"
make number_13                "$W" "trece"
make number_14                "$W" "catorce"
make number_15                "$W" "quince"
make number_16                "$W" "dieciséis"
make number_17                "$W" "diecisiete"
make number_18                "$W" "dieciocho"
make number_19                "$W" "diecinueve"
make number_20                "$W" "veinte"
make number_30                "$W" "treinta"
make number_40                "$W" "cuarenta"
make number_50                "$W" "cincuenta"
