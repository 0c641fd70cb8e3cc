# gnuplot -e "datafile='plot.dat'; outfile='x.png'" chart.gp
# plot.dat columns: N runc_pss_mib embed_pss_mib runc_start_s embed_start_s (medians)
set terminal pngcairo size 1200,500 font "sans,10"
set output outfile
set multiplot layout 1,2 title "containerd-shim-embed-v1 vs containerd-shim-runc-v2 (medians)"
set logscale xy
set xrange [0.7:350]
set grid
set key top left
set xlabel "containers (N)"
set style line 1 lc rgb "#d95f02" lw 2 pt 7 ps 1.2
set style line 2 lc rgb "#1b9e77" lw 2 pt 5 ps 1.2

set title "shim PSS, all shim processes of this containerd"
set ylabel "MiB"
plot datafile using 1:2 with linespoints ls 1 title "runc-v2", \
     ''       using 1:2:(sprintf("%.1f", $2)) with labels offset -3,0.6 notitle, \
     ''       using 1:3 with linespoints ls 2 title "embed", \
     ''       using 1:3:(sprintf("%.1f", $3)) with labels offset 3,-0.6 notitle

set title "start all N (sequential ctr run -d)"
set ylabel "seconds"
plot datafile using 1:4 with linespoints ls 1 title "runc-v2", \
     ''       using 1:4:(sprintf("%.2f", $4)) with labels offset -3,0.6 notitle, \
     ''       using 1:5 with linespoints ls 2 title "embed", \
     ''       using 1:5:(sprintf("%.2f", $5)) with labels offset 3,-0.6 notitle
unset multiplot
