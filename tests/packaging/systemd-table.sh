#!/usr/bin/env bash
# The unit's directives on old systemd, from tests/packaging/systemd-directives.tsv.
#
#   systemd-table.sh check [UNIT]         every directive line of UNIT has a row, every row a line
#   systemd-table.sh unit 219|229 [UNIT]  UNIT as that version applies it (unknown directives and
#                                         rejected values dropped, unknown @groups removed)
#   systemd-table.sh markdown             the README table
#
# UNIT defaults to unit/calico-medic.service. Exit 1 (with the offending lines) when check fails.
set -euo pipefail
cd "$(dirname "$0")/../.."
TABLE=tests/packaging/systemd-directives.tsv

# directive value kind since 219 229 note; an empty field becomes "-" (read would merge two tabs).
rows() { grep -v '^#' "$TABLE" | tail -n +2 | awk 'BEGIN { FS = OFS = "\t" } { for (i = 1; i <= 7; i++) if ($i == "") $i = "-"; print }'; }

# unit_lines UNIT: "lineno<TAB>directive<TAB>value" for every assignment line.
unit_lines() {
    awk '/^[A-Za-z][A-Za-z0-9]*=/ { i = index($0, "="); printf "%d\t%s\t%s\n", NR, substr($0, 1, i - 1), substr($0, i + 1) }' "$1"
}

# row_for DIRECTIVE VALUE: prints the number (1-based, among rows) of the first matching row.
declare -a R_DIR R_VAL R_KIND R_SINCE R_219 R_229 R_NOTE
load() {
    local i=0 d v k s a b n
    while IFS=$'\t' read -r d v k s a b n; do
        [[ $v == - ]] && v=""
        [[ $n == - ]] && n=""
        R_DIR[i]=$d R_VAL[i]=$v R_KIND[i]=$k R_SINCE[i]=$s R_219[i]=$a R_229[i]=$b R_NOTE[i]=$n
        i=$((i + 1))
    done < <(rows)
}
row_for() {
    local i
    for i in "${!R_DIR[@]}"; do
        [[ ${R_DIR[i]} == "$1" ]] || continue
        # shellcheck disable=SC2053 # the value column is a pattern
        if [[ -z ${R_VAL[i]} && -z $2 ]] || [[ -n ${R_VAL[i]} && $2 == ${R_VAL[i]} ]]; then
            echo "$i"
            return 0
        fi
    done
    return 1
}

cmd_check() {
    local unit=$1 bad="" used=() n d v i
    while IFS=$'\t' read -r n d v; do
        if i=$(row_for "$d" "$v"); then used[i]=1; else bad+="  $unit:$n: $d=$v"$'\n'; fi
    done < <(unit_lines "$unit")
    local stale=""
    for i in "${!R_DIR[@]}"; do
        [[ -n ${used[i]:-} ]] || stale+="  ${R_DIR[i]}=${R_VAL[i]}"$'\n'
    done
    [[ -z $bad && -z $stale ]] && return 0
    [[ -n $bad ]] && printf 'lines of %s with no row in %s (add one: first version, what 219/229 do):\n%s' "$unit" "$TABLE" "$bad"
    [[ -n $stale ]] && printf 'rows of %s that match no line of %s (remove them):\n%s' "$TABLE" "$unit" "$stale"
    return 1
}

cmd_unit() { # <219|229> <unit>
    local col=$1 unit=$2 line d v i what toks t out
    [[ $col == 219 || $col == 229 ]] || { echo "version must be 219 or 229" >&2; return 2; }
    while IFS= read -r line; do
        if [[ $line =~ ^([A-Za-z][A-Za-z0-9]*)=(.*)$ ]]; then
            d=${BASH_REMATCH[1]} v=${BASH_REMATCH[2]}
            i=$(row_for "$d" "$v") || { echo "no row for $d=$v (run check)" >&2; return 1; }
            if [[ $col == 219 ]]; then what=${R_219[i]}; else what=${R_229[i]}; fi
            case $what in
            yes) echo "$line" ;;
            no | ignored) echo "# ($col: $what) $line" ;;
            names)
                out=""
                read -ra toks <<<"${v#\~}"
                for t in "${toks[@]}"; do [[ $t == @* ]] || out+=" $t"; done
                if [[ -n $out ]]; then echo "$d=~${out# }"; else echo "# ($col: no names) $line"; fi
                ;;
            *) echo "bad 219/229 column '$what' for $d" >&2; return 1 ;;
            esac
        else
            echo "$line"
        fi
    done <"$unit"
}

mark() {
    case $1 in
    yes) echo "yes" ;;
    no) echo "— (unknown, skipped)" ;;
    ignored) echo "value rejected, previous line stays" ;;
    names) echo "names only (@groups skipped)" ;;
    esac
}
shown() { # <directive> <value pattern>
    case $2 in
    '') echo "\`$1=\`" ;;
    '*' | 'CAP_*') echo "\`$1=\`" ;;
    '~@*') echo "\`$1=~@…\` (groups)" ;;
    '~[a-z_]*') echo "\`$1=~…\` (names)" ;;
    *) echo "\`$1=$2\`" ;;
    esac
}
since() { if (($1 < 183)); then echo "≤ 44 (oldest)"; else echo "$1"; fi; }

cmd_markdown() {
    local i other=""
    echo "| directive (as in the unit) | first systemd | 219 (CentOS 7) | 229 (Ubuntu 16.04) | notes |"
    echo "|---|---|---|---|---|"
    for i in "${!R_DIR[@]}"; do
        if [[ ${R_KIND[i]} == hardening ]]; then
            printf '| %s | %s | %s | %s | %s |\n' "$(shown "${R_DIR[i]}" "${R_VAL[i]}")" "$(since "${R_SINCE[i]}")" \
                "$(mark "${R_219[i]}")" "$(mark "${R_229[i]}")" "${R_NOTE[i]}"
        elif [[ ${R_219[i]} != yes || ${R_229[i]} != yes ]]; then
            other+="$(shown "${R_DIR[i]}" "${R_VAL[i]}") (${R_SINCE[i]}+: ${R_NOTE[i]}); "
        fi
    done
    echo
    echo "Every other directive of the unit is known to 219 and 229${other:+, except ${other%; }}."
}

load
case ${1:-} in
check) cmd_check "${2:-unit/calico-medic.service}" ;;
unit) cmd_unit "${2:?219 or 229}" "${3:-unit/calico-medic.service}" ;;
markdown) cmd_markdown ;;
*)
    sed -n '2,9p' "$0" | sed 's/^# \{0,1\}//' >&2
    exit 2
    ;;
esac
